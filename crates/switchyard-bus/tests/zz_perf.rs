#![allow(clippy::unwrap_used)]
use std::time::Instant;
use switchyard_bus::{Bus, MemoryBus, Message, NatsBus, NatsOptions};

async fn run(bus: &dyn Bus, label: &str) {
    let subject = format!("perf.{}.{label}", std::process::id());
    let mut sub = bus.subscribe(&subject).await.unwrap();
    let n = 200_000;
    let started = Instant::now();
    let consumer = async {
        for _ in 0..n { sub.next().await.unwrap(); }
    };
    let producer = async {
        for i in 0..n { bus.publish(Message::new(subject.clone(), format!("{i:0>100}"))).await.unwrap(); }
        bus.flush().await.unwrap();
    };
    futures::join!(consumer, producer);
    let el = started.elapsed();
    println!("{label}: {n} msgs in {el:?} = {:.0}/s", n as f64 / el.as_secs_f64());
    let started = Instant::now();
    let mut responder = bus.subscribe(&format!("{subject}.svc")).await.unwrap();
    let reqs = 5_000;
    let serve = async {
        for _ in 0..reqs { let m = responder.next().await.unwrap(); bus.publish(m.reply_with("ok").unwrap()).await.unwrap(); }
    };
    let ask = async {
        for _ in 0..reqs { bus.request(Message::new(format!("{subject}.svc"), "q"), std::time::Duration::from_secs(5)).await.unwrap(); }
    };
    futures::join!(serve, ask);
    println!("{label}: {reqs} sequential requests in {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn perf() {
    run(&MemoryBus::new(), "memory").await;
    run(&NatsBus::connect(NatsOptions::default()).await.unwrap(), "nats").await;
}
