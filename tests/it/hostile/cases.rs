//! The hostile cases: what each is, and what must become of it.

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString};
use serde_json::Value;

use crate::harness::TestEnv;

/// What must become of a case.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Expect {
    Reply,
    /// Dead-lettered with this `x-error-kind`, its `x-error` naming this.
    Dead(&'static str, &'static str),
}

pub(super) struct Case {
    /// Also the AMQP `message_id` property: how its dead letter is found.
    pub(super) id: String,
    pub(super) body: Vec<u8>,
    pub(super) routing_key: String,
    pub(super) properties: BasicProperties,
    pub(super) expect: Expect,
}

pub(super) fn long(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.as_bytes()))
}

pub(super) fn headers(entries: Vec<(&str, AMQPValue)>) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in entries {
        t.insert(k.into(), v);
    }
    t
}

pub(super) struct Cases<'a> {
    pub(super) env: &'a TestEnv,
    pub(super) list: Vec<Case>,
}

impl Cases<'_> {
    /// A case whose body is `body` (the message's `message_id` is left as given).
    pub(super) fn raw(
        &mut self,
        name: &str,
        body: Vec<u8>,
        routing_key: Option<String>,
        props: BasicProperties,
        expect: Expect,
    ) {
        let id = format!("h-{name}");
        let routing_key = routing_key.unwrap_or_else(|| self.env.routing_key_of(&body));
        let properties = props.with_message_id(id.as_str().into()).with_delivery_mode(2);
        self.list.push(Case { id, body, routing_key, properties, expect });
    }

    /// A case built from a valid message of a customer of its own, changed by `change`.
    pub(super) fn message(
        &mut self,
        name: &str,
        change: impl FnOnce(&mut Value),
        props: BasicProperties,
        expect: Expect,
    ) {
        let mut body = self.env.message(&format!("h-{name}"), &format!("c-{name}"), "Do you have shoes?");
        change(&mut body);
        self.raw(name, body.to_string().into_bytes(), None, props, expect);
    }
}

pub(super) const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
