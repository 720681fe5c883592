//! The MQTT bridge: the whole mesh's points in a broker, Home Assistant
//! discovery, buttons and switches that run executors through the mesh,
//! and MQTT topics as sensors. One node of those with `[mqtt]` publishes at
//! a time; the others stand by, connected.
//!
//! Topics (`P` is `mqtt.topic_prefix`, `D` is `mqtt.discovery_prefix`,
//! `NODE` a node's name, `POINT` a point's name):
//!
//! | topic | retained | payload |
//! |---|---|---|
//! | `P/NODE/POINT` | yes | the value: a number, `true`/`false`, the text; `unavailable` while the sensor is in error |
//! | `P/NODE/POINT/attributes` | yes | JSON: `unit`, `age_ms`, `origin` (node name), `origin_id`, `ts_ms`, `error` (`null` or why) |
//! | `P/NODE/availability` | yes | `online` / `offline`, the mesh's view of NODE |
//! | `P/bridge/NODE` | yes | `active` / `standby` / `offline` (NODE's Last Will) |
//! | `P/bridge` | yes | the name of the node publishing now |
//! | `P/NODE/exec/EXECUTOR/run` | no | any payload runs EXECUTOR on NODE (only `mqtt = true` executors) |
//! | `P/NODE/exec/EXECUTOR/result` | no | JSON: `outcome`, `exit_code`, `output`, `at_ms` |
//! | `P/NODE/ACTUATOR/set` | no | `ON` / `OFF` drives an `mqtt = true` actuator |
//! | `D/COMPONENT/shoal_ID/OBJECT/config` | yes | Home Assistant discovery (see [`discovery`]) |

pub mod client;
pub mod discovery;
pub mod packet;
