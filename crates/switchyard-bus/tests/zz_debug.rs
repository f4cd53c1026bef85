use std::time::Duration;
use switchyard_bus::conformance::unique_prefix;
use switchyard_bus::{Bus, Message, NatsBus, NatsOptions};

#[tokio::test]
async fn debug_fanout() {
    for round in 0..20 {
        let a = NatsBus::connect(NatsOptions::new("nats://127.0.0.1:4222")).await.unwrap();
        let b = NatsBus::connect(NatsOptions::new("nats://127.0.0.1:4222")).await.unwrap();
        let p = unique_prefix("dbg");
        let mut sb = b.subscribe(&format!("{p}.>")).await.unwrap();
        b.flush().await.unwrap();
        a.publish(Message::new(format!("{p}.x"), "hi")).await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(2), sb.next()).await;
        if got.is_err() {
            a.flush().await.unwrap();
            let again = tokio::time::timeout(Duration::from_secs(2), sb.next()).await;
            println!("round {round}: missing; after flush of a: {:?}", again.map(|m| m.map(|m| m.subject)));
        }
    }
}
