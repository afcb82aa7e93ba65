"""Home Assistant's MQTT discovery schemas, mirrored on the test side (HA 2025.x, ``homeassistant.components.mqtt``).

Each platform's discovery schema is a pydantic model that forbids unknown keys -- stricter than HA,
which silently drops them (``vol.REMOVE_EXTRA``): a misspelt key would otherwise pass here and do
nothing there. Field names, types, enumerations and the cross-field rules follow the voluptuous
schemas in ``schemas.py`` (common entity and availability options), ``config.py`` (read-only /
read-write topics) and each platform module (``sensor.py``, ``binary_sensor.py``, ``event.py``,
``image.py``, ``text.py``, ``button.py``, ``device_trigger.py``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator


def _subscribe_topic(topic: str) -> str:
    """``util.valid_subscribe_topic``: non-empty, '#' only as the last level, '+' only as a whole level."""
    if not topic or len(topic.encode()) > 65535 or "\0" in topic:
        raise ValueError(f"invalid topic {topic!r}")
    levels = topic.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            raise ValueError(f"'#' must be the last level alone: {topic!r}")
        if "+" in level and level != "+":
            raise ValueError(f"'+' must be a whole level: {topic!r}")
    return topic


def _publish_topic(topic: str) -> str:
    """``util.valid_publish_topic``: a subscribe topic without wildcards."""
    _subscribe_topic(topic)
    if "+" in topic or "#" in topic:
        raise ValueError(f"wildcards are not allowed in a publish topic: {topic!r}")
    return topic


def _icon(icon: str) -> str:
    """``cv.icon``: ``prefix:name``."""
    if ":" not in icon:
        raise ValueError(f"icons should be specified in the form 'prefix:name', got {icon!r}")
    return icon


def _template(text: str) -> str:
    """``cv.template``: a string; balanced Jinja delimiters (HA compiles it on load)."""
    if text.count("{{") != text.count("}}") or text.count("{%") != text.count("%}"):
        raise ValueError(f"unbalanced template {text!r}")
    return text


SubscribeTopic = Annotated[str, AfterValidator(_subscribe_topic)]
PublishTopic = Annotated[str, AfterValidator(_publish_topic)]
Icon = Annotated[str, AfterValidator(_icon)]
Template = Annotated[str, AfterValidator(_template)]
Qos = Literal[0, 1, 2]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class DeviceInfo(_Strict):
    """``MQTT_ENTITY_DEVICE_INFO_SCHEMA``."""

    identifiers: list[str] = []
    connections: list[list[str]] = []
    manufacturer: str | None = None
    model: str | None = None
    model_id: str | None = None
    name: str | None = None
    hw_version: str | None = None
    serial_number: str | None = None
    sw_version: str | None = None
    via_device: str | None = None
    suggested_area: str | None = None
    configuration_url: str | None = None

    @model_validator(mode="after")
    def _identified(self) -> DeviceInfo:
        if not self.identifiers and not self.connections:
            raise ValueError("Device must have at least one identifying value in 'identifiers' and/or 'connections'")
        return self


class OriginInfo(_Strict):
    """``MQTT_ORIGIN_INFO_SCHEMA``."""

    name: str
    sw_version: str | None = None
    support_url: str | None = None


class _Entity(_Strict):
    """``MQTT_ENTITY_COMMON_SCHEMA`` with ``MQTT_AVAILABILITY_SCHEMA`` and ``MQTT_BASE_SCHEMA``."""

    availability_topic: SubscribeTopic | None = None
    availability_template: Template | None = None
    availability_mode: Literal["all", "any", "latest"] | None = None
    availability: list[dict[str, Any]] | None = None
    payload_available: str = "online"
    payload_not_available: str = "offline"
    device: DeviceInfo | None = None
    origin: OriginInfo | None = None
    enabled_by_default: bool = True
    entity_category: Literal["config", "diagnostic"] | None = None
    entity_picture: str | None = None
    icon: Icon | None = None
    json_attributes_topic: SubscribeTopic | None = None
    json_attributes_template: Template | None = None
    object_id: str | None = None
    default_entity_id: str | None = None
    unique_id: str | None = None
    name: str | None = None
    qos: Qos = 0
    encoding: str = "utf-8"

    @model_validator(mode="after")
    def _one_availability(self) -> _Entity:
        if self.availability_topic is not None and self.availability is not None:
            raise ValueError("availability_topic and availability are exclusive")
        return self


class _ReadOnly(_Entity):
    """``MQTT_RO_SCHEMA``."""

    state_topic: SubscribeTopic
    value_template: Template | None = None


class _ReadWrite(_Entity):
    """``MQTT_RW_SCHEMA``."""

    command_topic: PublishTopic
    retain: bool = False
    state_topic: SubscribeTopic | None = None
    value_template: Template | None = None


SENSOR_DEVICE_CLASSES = Literal[
    "apparent_power", "aqi", "battery", "current", "data_rate", "data_size", "date", "distance", "duration",
    "energy", "enum", "frequency", "humidity", "illuminance", "monetary", "power", "pressure", "signal_strength",
    "speed", "temperature", "timestamp", "voltage", "volume", "weight",
]  # fmt: skip
STATE_CLASSES = Literal["measurement", "measurement_angle", "total", "total_increasing"]


class Sensor(_ReadOnly):
    """``sensor.py`` ``_PLATFORM_SCHEMA_BASE`` and ``validate_sensor_state_and_device_class_config``."""

    device_class: SENSOR_DEVICE_CLASSES | None = None
    expire_after: Annotated[int, Field(ge=0)] | None = None
    force_update: bool = False
    last_reset_value_template: Template | None = None
    options: list[str] | None = None
    suggested_display_precision: Annotated[int, Field(ge=0)] | None = None
    state_class: STATE_CLASSES | None = None
    unit_of_measurement: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Sensor:
        if self.state_class is not None and self.device_class in ("date", "timestamp"):
            raise ValueError(f"state_class {self.state_class!r} is not allowed with device_class {self.device_class!r}")
        if self.options is not None and (self.state_class is not None or self.unit_of_measurement is not None):
            raise ValueError("options cannot be combined with state_class or unit_of_measurement")
        if self.device_class == "timestamp" and self.unit_of_measurement is not None:
            raise ValueError("a timestamp sensor has no unit_of_measurement")
        return self


class BinarySensor(_ReadOnly):
    """``binary_sensor.py``."""

    device_class: (
        Literal[
            "battery", "cold", "connectivity", "door", "garage_door", "heat", "light", "lock", "moisture", "motion",
            "moving", "occupancy", "opening", "plug", "power", "presence", "problem", "running", "safety", "smoke",
            "sound", "tamper", "update", "vibration", "window",
        ]
        | None
    ) = None  # fmt: skip
    expire_after: Annotated[int, Field(ge=0)] | None = None
    force_update: bool = False
    off_delay: Annotated[int, Field(gt=0)] | None = None
    payload_on: str = "ON"
    payload_off: str = "OFF"


class Event(_ReadOnly):
    """``event.py``: ``event_types`` required."""

    device_class: Literal["button", "doorbell", "motion"] | None = None
    event_types: Annotated[list[str], Field(min_length=1)]


class Image(_Entity):
    """``image.py``: exactly one of ``image_topic`` / ``url_topic``; ``content_type`` only with ``image_topic``."""

    content_type: str | None = None
    image_topic: SubscribeTopic | None = None
    url_topic: SubscribeTopic | None = None
    image_encoding: Literal["b64"] | None = None
    url_template: Template | None = None

    @model_validator(mode="after")
    def _one_topic(self) -> Image:
        if (self.image_topic is None) == (self.url_topic is None):
            raise ValueError("Expected one of [`image_topic`, `url_topic`]")
        if self.content_type is not None and self.url_topic is not None:
            raise ValueError("Option `content_type` can not be used together with `url_topic`")
        return self


class Text(_ReadWrite):
    """``text.py``: ``min <= max <= 255``."""

    command_template: Template | None = None
    max: Annotated[int, Field(ge=0, le=255)] = 255
    min: Annotated[int, Field(ge=0, le=255)] = 0
    mode: Literal["text", "password"] = "text"
    pattern: str | None = None

    @model_validator(mode="after")
    def _range(self) -> Text:
        if self.min > self.max:
            raise ValueError("text length min must be <= max")
        return self


class Button(_Entity):
    """``button.py``."""

    command_topic: PublishTopic
    command_template: Template | None = None
    device_class: Literal["identify", "restart", "update"] | None = None
    payload_press: str = "PRESS"
    retain: bool = False


class DeviceTrigger(_Strict):
    """``device_trigger.py`` ``TRIGGER_DISCOVERY_SCHEMA`` (not an entity: no name, availability or unique_id)."""

    automation_type: Literal["trigger"]
    device: DeviceInfo
    origin: OriginInfo | None = None
    payload: str | None = None
    subtype: str
    topic: SubscribeTopic
    type: str
    value_template: Template | None = None
    qos: Qos = 0
    encoding: str = "utf-8"


PLATFORMS: dict[str, type[_Strict]] = {
    "sensor": Sensor,
    "binary_sensor": BinarySensor,
    "event": Event,
    "image": Image,
    "text": Text,
    "button": Button,
    "device_automation": DeviceTrigger,
}


def validate(component: str, config: dict[str, Any]) -> _Strict:
    """Validate one discovery config as HA would for ``component``; raises ``pydantic.ValidationError``."""
    return PLATFORMS[component].model_validate(config)
