//! Home Assistant MQTT discovery configs: one device per mesh node, an
//! entity per point, executor and actuator exposed to MQTT.
