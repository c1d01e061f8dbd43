"""The MQTT boundary shared by the alert sink and the MQTT activity source: settings and client."""
