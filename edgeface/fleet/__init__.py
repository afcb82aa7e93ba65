"""Fleet replication: enrollments shared by the devices of a site through the MQTT broker (docs/fleet.md)."""
