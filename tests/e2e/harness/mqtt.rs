//! A test client that records everything published under a topic filter.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{Client, Event, MqttOptions, Packet, QoS};

#[derive(Clone, Debug)]
pub struct Message {
    pub topic: String,
    pub payload: String,
    /// The payload as sent (a snapshot's JPEG).
    pub bytes: Vec<u8>,
    pub retain: bool,
}

pub struct Observer {
    messages: Arc<Mutex<Vec<Message>>>,
    client: Client,
}

impl Observer {
    pub fn subscribe(port: u16, filter: &str) -> Self {
        Self::subscribe_as(port, filter, None)
    }

    /// Like [`Observer::subscribe`], logging in with `credentials`.
    pub fn subscribe_as(port: u16, filter: &str, credentials: Option<(&str, &str)>) -> Self {
        // Client ids must be unique per broker, or the broker disconnects the older client.
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut options = MqttOptions::new(format!("observer-{}-{n}", std::process::id()), "127.0.0.1", port);
        options.set_keep_alive(Duration::from_secs(5));
        if let Some((user, password)) = credentials {
            options.set_credentials(user, password);
        }
        let (client, mut connection) = Client::new(options, 100);
        client.subscribe(filter, QoS::AtLeastOnce).expect("subscribe");
        let messages = Arc::new(Mutex::new(Vec::new()));
        let sink = messages.clone();
        let (subscribed_tx, subscribed_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for event in connection.iter() {
                match event {
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        let _ = subscribed_tx.send(());
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => sink.lock().expect("observer lock").push(Message {
                        topic: p.topic.clone(),
                        payload: String::from_utf8_lossy(&p.payload).into_owned(),
                        bytes: p.payload.to_vec(),
                        retain: p.retain,
                    }),
                    Ok(_) => {}
                    Err(_) => std::thread::sleep(Duration::from_millis(100)),
                }
            }
        });
        subscribed_rx.recv_timeout(Duration::from_secs(10)).expect("observer subscribed");
        Self { messages, client }
    }

    pub fn publish(&self, topic: &str, payload: &str) {
        self.client.publish(topic, QoS::AtLeastOnce, false, payload.as_bytes().to_vec()).expect("publish");
    }

    pub fn messages(&self) -> Vec<Message> {
        self.messages.lock().expect("observer lock").clone()
    }

    pub fn on(&self, topic: &str) -> Vec<Message> {
        self.messages().into_iter().filter(|m| m.topic == topic).collect()
    }

    /// Waits until some message on `topic` satisfies `pred`; returns it.
    pub fn wait_for(&self, topic: &str, timeout: Duration, pred: impl Fn(&Message) -> bool) -> Message {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(m) = self.on(topic).into_iter().find(|m| pred(m)) {
                return m;
            }
            assert!(Instant::now() < deadline, "no matching message on {topic} within {timeout:?}; got {:#?}", self.on(topic));
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        let _ = self.client.disconnect();
    }
}
