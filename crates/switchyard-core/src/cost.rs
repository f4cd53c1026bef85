//! What a call costs, from configured per-million-token prices.

/// Prices in US dollars per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Price {
    pub input_per_mtok: f64,
    pub output_per_mtok: f64,
}

impl Price {
    pub fn cost_usd(&self, input_tokens: u64, output_tokens: u64) -> f64 {
        (input_tokens as f64 * self.input_per_mtok + output_tokens as f64 * self.output_per_mtok) / 1_000_000.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_is_linear_in_tokens() {
        let price = Price { input_per_mtok: 2.5, output_per_mtok: 10.0 };
        assert!((price.cost_usd(1_000_000, 0) - 2.5).abs() < 1e-12);
        assert!((price.cost_usd(1_000, 500) - (0.0025 + 0.005)).abs() < 1e-12);
        assert_eq!(Price::default().cost_usd(10, 10), 0.0);
    }
}
