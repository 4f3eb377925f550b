//! AMQP properties that no well-behaved client sends: a `message_id` and a
//! header key that are not UTF-8. RabbitMQ delivers them as published; lapin
//! cannot even send them (its strings are Rust strings), so this test speaks
//! AMQP 0-9-1 itself over TCP. One such message once closed the worker's whole
//! connection at each delivery (vendor/README.md); now it is one message among
//! others: answered or dead-lettered once, its neighbours untouched.

use std::collections::HashMap;
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::{PATIENCE, TestEnv, header_str};

fn short(out: &mut Vec<u8>, s: &[u8]) {
    out.push(s.len() as u8);
    out.extend_from_slice(s);
}

fn long(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s);
}

struct Raw {
    stream: TcpStream,
}

impl Raw {
    async fn frame(&mut self, kind: u8, channel: u16, payload: &[u8]) {
        let mut f = vec![kind];
        f.extend_from_slice(&channel.to_be_bytes());
        f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        f.extend_from_slice(payload);
        f.push(0xCE);
        self.stream.write_all(&f).await.expect("write frame");
    }

    async fn method(&mut self, channel: u16, class: u16, method: u16, args: &[u8]) {
        let mut p = class.to_be_bytes().to_vec();
        p.extend_from_slice(&method.to_be_bytes());
        p.extend_from_slice(args);
        self.frame(1, channel, &p).await;
    }

    /// Reads frames until the method `class.method` arrives; returns its arguments.
    async fn expect(&mut self, class: u16, method: u16) -> Vec<u8> {
        loop {
            let mut header = [0u8; 7];
            self.stream.read_exact(&mut header).await.expect("frame header");
            let size = u32::from_be_bytes([header[3], header[4], header[5], header[6]]) as usize;
            let mut payload = vec![0u8; size + 1];
            self.stream.read_exact(&mut payload).await.expect("frame payload");
            if header[0] == 1 && payload.len() >= 5 {
                let got = (
                    u16::from_be_bytes([payload[0], payload[1]]),
                    u16::from_be_bytes([payload[2], payload[3]]),
                );
                assert_ne!(
                    got,
                    (10, 50),
                    "the broker closed the connection: {:?}",
                    String::from_utf8_lossy(&payload)
                );
                assert_ne!(
                    got,
                    (20, 40),
                    "the broker closed the channel: {:?}",
                    String::from_utf8_lossy(&payload)
                );
                if got == (class, method) {
                    return payload[4..size].to_vec();
                }
            }
        }
    }

    /// Connects and opens channel 1 in confirm mode, with the URL's credentials.
    async fn open(amqp_url: &str) -> Self {
        let url = url::Url::parse(amqp_url).expect("amqp url");
        let addr = format!("{}:{}", url.host_str().unwrap_or("127.0.0.1"), url.port().unwrap_or(5672));
        let user = if url.username().is_empty() { "guest".to_owned() } else { url.username().to_owned() };
        let password = url.password().unwrap_or("guest").to_owned();
        let vhost = match url.path().trim_start_matches('/') {
            "" => "/".to_owned(),
            v => url::form_urlencoded::parse(format!("v={v}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_else(|| "/".into()),
        };
        let mut raw = Raw { stream: TcpStream::connect(addr).await.expect("connect") };
        raw.stream.write_all(b"AMQP\x00\x00\x09\x01").await.expect("protocol header");
        raw.expect(10, 10).await;
        let mut start_ok = Vec::new();
        long(&mut start_ok, b"");
        short(&mut start_ok, b"PLAIN");
        long(&mut start_ok, format!("\0{user}\0{password}").as_bytes());
        short(&mut start_ok, b"en_US");
        raw.method(0, 10, 11, &start_ok).await;
        let tune = raw.expect(10, 30).await;
        let mut tune_ok = tune[..6].to_vec();
        tune_ok.extend_from_slice(&0u16.to_be_bytes());
        raw.method(0, 10, 31, &tune_ok).await;
        let mut open = Vec::new();
        short(&mut open, vhost.as_bytes());
        short(&mut open, b"");
        open.push(0);
        raw.method(0, 10, 40, &open).await;
        raw.expect(10, 41).await;
        raw.method(1, 20, 10, &[0]).await;
        raw.expect(20, 11).await;
        raw.method(1, 85, 10, &[0]).await;
        raw.expect(85, 11).await;
        raw
    }

    /// Publishes `body` with these raw `message_id` bytes and one header of
    /// these raw key bytes; waits for the broker's confirm.
    async fn publish(
        &mut self,
        exchange: &str,
        routing_key: &str,
        message_id: &[u8],
        header_key: &[u8],
        body: &[u8],
    ) {
        let mut publish = 0u16.to_be_bytes().to_vec();
        short(&mut publish, exchange.as_bytes());
        short(&mut publish, routing_key.as_bytes());
        publish.push(0);
        self.method(1, 60, 40, &publish).await;

        let mut table = Vec::new();
        short(&mut table, header_key);
        table.push(b'S');
        long(&mut table, b"value");
        let mut header = 60u16.to_be_bytes().to_vec();
        header.extend_from_slice(&0u16.to_be_bytes());
        header.extend_from_slice(&(body.len() as u64).to_be_bytes());
        // content-type, headers, delivery-mode, message-id
        header.extend_from_slice(&((1u16 << 15) | (1 << 13) | (1 << 12) | (1 << 7)).to_be_bytes());
        short(&mut header, b"application/json");
        long(&mut header, &table);
        header.push(2);
        short(&mut header, message_id);
        self.frame(2, 1, &header).await;
        self.frame(3, 1, body).await;
        self.expect(60, 80).await;
    }

    async fn close(mut self) {
        let mut close = 200u16.to_be_bytes().to_vec();
        short(&mut close, b"done");
        close.extend_from_slice(&[0, 0, 0, 0]);
        self.method(0, 10, 50, &close).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_property_that_is_not_utf8_is_one_message_among_others() {
    let env = TestEnv::new().await;
    let mut worker = env.spawn_worker("w-raw");
    env.ready(&mut worker).await;

    let mut raw = Raw::open(&env.config.amqp.url).await;
    let exchange = env.config.amqp.inbound_exchange.clone();
    let key = format!("whatsapp.{}", env.tenant_id);
    let good = |id: &str| env.message(id, &format!("c-{id}"), "Do you have shoes?").to_string().into_bytes();
    raw.publish(&exchange, &key, b"good-a", b"x-note", &good("good-a")).await;
    raw.publish(&exchange, &key, b"\xff\xfe-valid", b"\xff-key", &good("odd-valid")).await;
    raw.publish(&exchange, &key, b"\xff\xfe-invalid", b"\xff-key", b"{not json").await;
    raw.publish(&exchange, &key, b"good-b", b"x-note", &good("good-b")).await;
    raw.close().await;

    let started = Instant::now();
    let mut replies: HashMap<String, usize> = HashMap::new();
    let mut dead = Vec::new();
    while replies.len() < 3 || dead.is_empty() {
        assert!(started.elapsed() < PATIENCE, "replies {replies:?}, dead letters {}", dead.len());
        for (_, body) in env.replies().await {
            *replies.entry(body["in_reply_to"].as_str().unwrap_or("?").to_owned()).or_default() += 1;
        }
        dead.extend(env.dead_letters().await);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    for (_, body) in env.replies().await {
        *replies.entry(body["in_reply_to"].as_str().unwrap_or("?").to_owned()).or_default() += 1;
    }
    dead.extend(env.dead_letters().await);
    assert_eq!(replies, HashMap::from([("good-a".into(), 1), ("odd-valid".into(), 1), ("good-b".into(), 1)]));
    assert_eq!(dead.len(), 1, "the bad one dead-lettered once");
    assert_eq!(header_str(&dead[0], "x-error-kind").as_deref(), Some("malformed"));
    assert_eq!(dead[0].data, b"{not json");
    assert_eq!(worker.tally.total(), 4, "each message settled once, none redelivered");
    worker.stop().await.expect("clean stop");
    env.finish().await;
}
