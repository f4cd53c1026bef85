//! Checking the arithmetic a reply shows: `9 * 2 = 18`, `<<16-3-4=9>>`.
//!
//! A chain-of-thought answer that writes a wrong equation is likely wrong. The checker finds every
//! `expression = number` in the text whose left side is made only of numbers, `+ - * / x × ÷` and parentheses
//! (with at least one operator), evaluates it, and compares with the stated result within the precision the
//! result is written in (`10/3 = 3.33` is right, `10/3 = 4` is not). Anything it cannot read is not counted.

/// What the arithmetic check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ArithCheck {
    /// Equations evaluated.
    pub checked: u32,
    /// Equations whose stated result is wrong.
    pub wrong: u32,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Tok {
    /// A number and the count of decimals it was written with.
    Num(f64, u32),
    Op(char),
    Open,
    Close,
    Eq,
    /// Anything else: breaks an expression.
    Sep,
}

fn tokenize(text: &str) -> Vec<Tok> {
    let chars: Vec<char> = text.chars().collect();
    let mut toks = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_ascii_digit() {
            let mut digits = String::new();
            let mut decimals = 0;
            let mut seen_dot = false;
            while i < chars.len() {
                let d = chars[i];
                if d.is_ascii_digit() {
                    digits.push(d);
                    if seen_dot {
                        decimals += 1;
                    }
                } else if d == ',' && chars.get(i + 1..i + 4).is_some_and(|g| g.iter().all(char::is_ascii_digit)) {
                    // Thousands separator.
                } else if d == '.' && !seen_dot && chars.get(i + 1).is_some_and(char::is_ascii_digit) {
                    seen_dot = true;
                    digits.push('.');
                } else {
                    break;
                }
                i += 1;
            }
            toks.push(digits.parse().map_or(Tok::Sep, |v| Tok::Num(v, decimals)));
            continue;
        }
        let tok = match c {
            '+' | '-' | '*' | '/' | '×' | '÷' | '−' | '·' => Some(Tok::Op(normalize_op(c))),
            // `x` multiplies only between spaces or numbers ("3 x 4", "3x4"), not inside a word.
            'x' | 'X' => {
                let before = i.checked_sub(1).and_then(|j| chars.get(j)).copied();
                let after = chars.get(i + 1).copied();
                let isolated = |o: Option<char>| o.is_none_or(|c| c == ' ' || c.is_ascii_digit());
                (isolated(before) && isolated(after)).then_some(Tok::Op('*'))
            }
            '(' => Some(Tok::Open),
            ')' => Some(Tok::Close),
            '=' => Some(Tok::Eq),
            // Currency signs and spaces inside an expression are transparent.
            '$' | '€' | '£' | ' ' | '\t' => None,
            _ => Some(Tok::Sep),
        };
        if let Some(t) = tok {
            toks.push(t);
        }
        i += 1;
    }
    toks
}

fn normalize_op(c: char) -> char {
    match c {
        '×' | '·' => '*',
        '÷' => '/',
        '−' => '-',
        other => other,
    }
}

/// Recursive-descent evaluation of a token slice; `None` unless it is one complete expression.
struct Parser<'t> {
    toks: &'t [Tok],
    pos: usize,
}

impl Parser<'_> {
    fn expr(&mut self) -> Option<f64> {
        let mut value = self.term()?;
        while let Some(Tok::Op(op @ ('+' | '-'))) = self.toks.get(self.pos).copied() {
            self.pos += 1;
            let rhs = self.term()?;
            value = if op == '+' { value + rhs } else { value - rhs };
        }
        Some(value)
    }

    fn term(&mut self) -> Option<f64> {
        let mut value = self.factor()?;
        while let Some(Tok::Op(op @ ('*' | '/'))) = self.toks.get(self.pos).copied() {
            self.pos += 1;
            let rhs = self.factor()?;
            value = if op == '*' { value * rhs } else { value / rhs };
        }
        Some(value)
    }

    fn factor(&mut self) -> Option<f64> {
        match self.toks.get(self.pos).copied()? {
            Tok::Num(v, _) => {
                self.pos += 1;
                Some(v)
            }
            Tok::Op('-') => {
                self.pos += 1;
                self.factor().map(|v| -v)
            }
            Tok::Open => {
                self.pos += 1;
                let v = self.expr()?;
                (self.toks.get(self.pos) == Some(&Tok::Close)).then(|| self.pos += 1)?;
                Some(v)
            }
            _ => None,
        }
    }
}

fn evaluate(toks: &[Tok]) -> Option<f64> {
    if !toks.iter().any(|t| matches!(t, Tok::Op(_))) {
        return None;
    }
    let mut parser = Parser { toks, pos: 0 };
    let value = parser.expr()?;
    (parser.pos == toks.len() && value.is_finite()).then_some(value)
}

/// Checks every readable equation of `text`.
pub fn check_arithmetic(text: &str) -> ArithCheck {
    let toks = tokenize(text);
    let mut result = ArithCheck::default();
    for (i, tok) in toks.iter().enumerate() {
        if *tok != Tok::Eq {
            continue;
        }
        // The stated result: a number, possibly negative, right after `=`.
        let (stated, decimals) = match (toks.get(i + 1), toks.get(i + 2)) {
            (Some(Tok::Num(v, d)), _) => (*v, *d),
            (Some(Tok::Op('-')), Some(Tok::Num(v, d))) => (-*v, *d),
            _ => continue,
        };
        // The left side: back to the previous separator or `=`.
        let start = toks[..i].iter().rposition(|t| matches!(t, Tok::Sep | Tok::Eq)).map_or(0, |p| p + 1);
        // Drop unmatched opening parentheses at the start ("(so 3 + 4 = 7").
        let mut left = &toks[start..i];
        while left.first() == Some(&Tok::Open)
            && left.iter().filter(|t| **t == Tok::Open).count() > left.iter().filter(|t| **t == Tok::Close).count()
        {
            left = &left[1..];
        }
        let Some(actual) = evaluate(left) else { continue };
        result.checked += 1;
        let tolerance = 0.5 * 10f64.powi(-(decimals.min(12) as i32)) + 1e-9 * actual.abs();
        if (actual - stated).abs() > tolerance {
            result.wrong += 1;
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, checked: u32, wrong: u32) {
        assert_eq!(check_arithmetic(text), ArithCheck { checked, wrong }, "{text:?}");
    }

    #[test]
    fn finds_right_and_wrong_equations() {
        // The first `=` is followed by `<<`, not by its result: only the annotation is checked.
        check("She sells 9 * $2 = $<<9*2=18>>18.", 1, 0);
        check("<<8*5*60/100=24>> and <<40+24=64>>", 2, 0);
        check("So 16 - 3 - 4 = 10 eggs", 1, 1);
        check("(3 + 4) x 2 = 14, and 2 × 3 = 7", 2, 1);
        check("1,200 / 3 = 400.", 1, 0);
        check("10 / 3 = 3.33 and 10 / 3 = 4", 2, 1);
        check("10 / 3 = 3.3333", 1, 0);
        check("5 - 8 = -3", 1, 0);
        check("x = 5, total = 12", 0, 0);
        check("a box = 4 apples", 0, 0);
        check("6 / 0 = 1", 0, 0);
        check("(so 3 + 4 = 7", 1, 0);
        check("the extra = ((2 + 3) * 4 = 20", 1, 0);
        check("", 0, 0);
        check("=====", 0, 0);
        check("3 + = 4", 0, 0);
        check("max(3, 4) = 4", 0, 0);
    }
}
