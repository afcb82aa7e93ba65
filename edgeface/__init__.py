"""edgeface: offline real-time face recognition for edge devices, spoken to over MQTT."""

__version__ = "0.1.0"
