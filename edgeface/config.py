"""Settings: one validated, frozen model loaded from TOML with ``EDGEFACE_`` environment overrides.

This is the only module that reads configuration (through ``config_sources``). Environment variables
use ``__`` between levels, e.g. ``EDGEFACE_MQTT__HOST=broker.lan`` or
``EDGEFACE_DECISION__MATCH_THRESHOLD=0.9``, and beat the file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from edgeface.config_sources import deep_merge, env_overrides, format_validation_error, read_toml
from edgeface.errors import ConfigError

DEFAULT_STATE_DIR = Path(os.environ.get("STATE_DIRECTORY", "~/.local/share/edgeface")).expanduser()
DEFAULT_MODELS_DIR = Path(__file__).resolve().parent.parent / "models"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DeviceConfig(_Section):
    id: str = Field(
        "edgeface",
        pattern=r"^[A-Za-z0-9_-]{1,64}$",
        description="Device id used in every MQTT topic; letters, digits, '-' and '_'.",
    )
    name: str = Field("edgeface", min_length=1, max_length=128, description="Human-readable name (Home Assistant).")
    state_dir: Path = Field(DEFAULT_STATE_DIR, description="Directory for the database, spool and backups.")


class SourceConfig(_Section):
    uri: str = Field(
        "auto",
        description=(
            "'auto' (first camera, else the bundled sample replay), a V4L2 index ('0') or device path, "
            "an rtsp:// or http:// URL, a GStreamer pipeline ending in 'appsink', a video file or an image folder."
        ),
    )
    width: int | None = Field(None, ge=16, le=7680, description="Requested capture width (cameras only).")
    height: int | None = Field(None, ge=16, le=4320, description="Requested capture height (cameras only).")
    fps: float | None = Field(None, gt=0, le=240, description="Replay/capture rate cap; None = native rate.")
    realtime: bool = Field(True, description="Replay files at their native rate; false = as fast as possible.")
    loop: bool = Field(True, description="Restart a file or folder replay at its end.")
    resize_width: int | None = Field(
        640, ge=64, le=7680, description="Downscale frames wider than this before detection; None keeps full size."
    )
    reconnect_initial_s: float = Field(0.5, gt=0, le=60, description="First reconnect delay after a lost source.")
    reconnect_max_s: float = Field(30.0, gt=0, le=3600, description="Reconnect backoff ceiling.")

    @model_validator(mode="after")
    def _backoff_order(self) -> SourceConfig:
        if self.reconnect_max_s < self.reconnect_initial_s:
            raise ValueError("reconnect_max_s must be >= reconnect_initial_s")
        return self


class VisionConfig(_Section):
    backend: Literal["litert", "mediapipe"] = Field("litert", description="Runtime for Mediapipe's face models.")
    detector: Literal["short", "full"] = Field(
        "short", description="BlazeFace short range (<2 m) or full range (<5 m)."
    )
    min_detection_score: float = Field(0.6, ge=0.05, le=1.0, description="Detector confidence threshold.")
    max_faces: int = Field(8, ge=1, le=64, description="Faces kept per frame, largest first.")
    embedder: str = Field(
        "fused_dlib_sface_int8",
        description="Embedder id from models/manifest.json (the default fuses dlib and SFace; docs/accuracy.md).",
    )
    models_dir: Path = Field(DEFAULT_MODELS_DIR, description="Directory holding manifest.json and the model files.")
    threads: int = Field(1, ge=1, le=8, description="Interpreter threads per model (1 is fastest on a Pi 4).")
    keypoint_fallback: bool = Field(
        True,
        description=(
            "Align a face FaceMesh rejects on the detector's keypoints (eyes and mouth) instead of skipping it; "
            "its samples carry aligned_by=keypoints and count less in a track's vote."
        ),
    )
    keypoint_fallback_min_score: float = Field(
        0.7, ge=0.05, le=1.0, description="Detector confidence a face needs for the keypoint fallback."
    )


class DecisionConfig(_Section):
    match_threshold: float | None = Field(
        None, ge=-1, le=1, description="Cosine similarity to accept a person; None = the model's manifest default."
    )
    unknown_threshold: float | None = Field(
        None,
        ge=-1,
        le=1,
        description=(
            "Below this a face is a stranger; between the two it is 'uncertain'. "
            "None = the match threshold minus the model's manifest band."
        ),
    )
    margin: float | None = Field(
        None,
        ge=0,
        le=1,
        description="Required similarity lead over the second-best person; None = the model's manifest default.",
    )
    min_face_px: int = Field(48, ge=16, le=2000, description="Smallest face side (pixels) that may be decided.")
    min_sharpness: float = Field(
        20.0, ge=0, description="Variance of Laplacian on the aligned chip below which a face is too blurry."
    )
    max_yaw_deg: float = Field(40.0, gt=0, le=90, description="Faces turned further than this are not decided.")
    votes: int = Field(3, ge=1, le=30, description="Embeddings fused per track before deciding.")
    embed_interval_s: float = Field(0.15, ge=0, le=10, description="Minimum time between embeddings of one track.")
    cooldown_s: float = Field(10.0, ge=0, le=3600, description="Per-person silence after a recognition.")
    top_k: int = Field(3, ge=1, le=50, description="Candidates reported per match.")
    presence_timeout_s: float = Field(30.0, gt=0, le=86400, description="Presence turns off this long after last seen.")
    access_metadata_key: str = Field("access", description="Metadata key that must be true for 'grant'.")

    @model_validator(mode="after")
    def _threshold_order(self) -> DecisionConfig:
        if (
            self.match_threshold is not None
            and self.unknown_threshold is not None
            and self.unknown_threshold > self.match_threshold
        ):
            raise ValueError("unknown_threshold must be <= match_threshold")
        return self


LivenessMode = Literal[
    "off", "blink", "motion", "any", "all", "passive", "passive+blink", "passive+motion", "passive+any", "passive+all"
]


class LivenessConfig(_Section):
    # A door's default: the passive model refuses prints and screens at once and rejected 0.2 % of the
    # faces in live video (both clips) and 5 % of dev/ photos (docs/liveness.md); blink/motion add seconds.
    mode: LivenessMode = Field(
        "passive",
        description=(
            "Liveness checks a grant needs: 'passive' (the anti-spoofing model: not a print or a screen), "
            "'blink' (an eye blink), 'motion' (head moves in 3-D, unlike a photo), 'any' (blink or motion), "
            "'all' (both); 'passive+X' needs the model and X; 'off' grants without liveness."
        ),
    )
    window_s: float = Field(
        3.0,
        ge=0.5,
        le=10.0,
        description=(
            "Seconds of a track within which liveness must show; a recognised face showing none by then is "
            "reported with reason 'liveness_failed' and no grant."
        ),
    )
    blink_close_ratio: float = Field(
        0.7, gt=0.1, lt=0.9, description="Eye aspect ratio, as a fraction of the open-eye value, that counts as shut."
    )
    blink_max_s: float = Field(
        0.5, ge=0.1, le=2.0, description="Longest open-shut-open sequence taken for a blink (seconds)."
    )
    motion_threshold: float = Field(
        0.035,
        gt=0.0,
        le=1.0,
        description="Non-planar landmark motion (RMS, in eye distances) from which a face is a 3-D head, not a photo.",
    )
    passive_models: tuple[str, ...] = Field(
        ("minifasnet_v2_2p7_float32", "minifasnet_v1se_4p0_float32"),
        min_length=1,
        max_length=4,
        description="Liveness model ids from models/manifest.json whose live probabilities are averaged.",
    )
    passive_threshold: float | None = Field(
        None, gt=0, lt=1, description="Fused live probability from which a face is live; None = the manifest's."
    )
    passive_samples: int = Field(
        3, ge=1, le=20, description="Scored sightings of a track averaged before the passive check decides."
    )

    @model_validator(mode="after")
    def _blink_fits_window(self) -> LivenessConfig:
        if self.blink_max_s > self.window_s:
            raise ValueError("blink_max_s must be <= window_s")
        return self


class TrackerConfig(_Section):
    iou_threshold: float = Field(0.3, ge=0, le=1, description="Minimum IoU to continue a track.")
    max_age_s: float = Field(1.0, gt=0, le=60, description="A track unseen this long ends.")


class DatabaseConfig(_Section):
    path: Path | None = Field(None, description="npz database; None = <state_dir>/faces.npz.")
    backups: int = Field(5, ge=0, le=100, description="Previous versions kept next to the database.")
    keep_images: bool = Field(
        False, description="Keep aligned face chips of enrolled samples (needed by 'db rebuild' after a model change)."
    )
    enroll_min_face_px: int = Field(80, ge=16, le=4000, description="Smallest face side accepted for enrollment.")
    enroll_min_sharpness: float = Field(30.0, ge=0, description="Sharpness floor for enrollment.")
    enroll_max_yaw_deg: float = Field(30.0, gt=0, le=90, description="Most turned face accepted for enrollment.")


class UnknownsConfig(_Section):
    ttl_s: float = Field(3600.0, gt=0, le=30 * 86400, description="Unknown clusters and snapshots expire after this.")
    max_clusters: int = Field(200, ge=1, le=100000, description="Spool bound; the oldest cluster is evicted.")
    samples_per_cluster: int = Field(10, ge=1, le=100, description="Embeddings kept per unknown cluster.")
    cluster_threshold: float | None = Field(
        None, ge=-1, le=1, description="Similarity joining a sighting to a cluster; None = the match threshold."
    )
    snapshots: bool = Field(False, description="Keep a JPEG crop per unknown cluster (expires with it).")
    publish_snapshot: bool = Field(False, description="Embed the JPEG crop (base64) in unknown events.")


class TlsConfig(_Section):
    ca_file: Path | None = Field(None, description="CA bundle; None = system store.")
    cert_file: Path | None = Field(None, description="Client certificate for mutual TLS.")
    key_file: Path | None = Field(None, description="Client key for mutual TLS.")
    insecure: bool = Field(False, description="Skip hostname verification (testing only).")


class MqttConfig(_Section):
    host: str | None = Field(None, description="Broker host; None = start the embedded broker on 127.0.0.1.")
    port: int = Field(1883, ge=1, le=65535, description="Broker port.")
    embedded_port: int = Field(1883, ge=0, le=65535, description="Port of the embedded broker (0 = any free port).")
    transport: Literal["tcp", "websockets"] = Field("tcp", description="Transport to the broker.")
    tls: TlsConfig | None = Field(None, description="Enable TLS with these settings.")
    username: str | None = Field(None, description="Broker username.")
    password: SecretStr | None = Field(None, description="Broker password (prefer password_file or env).")
    password_file: Path | None = Field(None, description="File holding the broker password; must be mode 0600.")
    client_id: str | None = Field(None, description="MQTT client id; None = edgeface-<device id>.")
    base_topic: str = Field("edgeface", pattern=r"^[^#+]+$", description="Prefix of every topic.")
    qos: Literal[0, 1, 2] = Field(1, description="QoS of events and replies.")
    keepalive_s: int = Field(30, ge=5, le=3600, description="MQTT keepalive.")
    reconnect_max_s: float = Field(30.0, gt=0, le=3600, description="Reconnect backoff ceiling.")
    outbox_size: int = Field(1000, ge=1, le=1_000_000, description="Events held while the broker is unreachable.")
    outbox_durable: bool = Field(
        True, description="Keep waiting events on disk (<state_dir>/mqtt.sqlite3): a restart loses none."
    )
    outbox_max_bytes: int = Field(
        64 * 1024 * 1024, ge=64 * 1024, le=4 * 1024**3, description="Bytes of waiting events; the oldest go first."
    )
    outbox_max_age_s: float = Field(
        7 * 86400.0, gt=0, le=365 * 86400.0, description="Waiting events older than this are dropped (counted)."
    )
    discovery: bool = Field(False, description="Publish Home Assistant MQTT discovery.")
    discovery_prefix: str = Field("homeassistant", description="Home Assistant discovery prefix.")
    birth_topic: str | None = Field(
        None,
        pattern=r"^[^#+]+$",
        description="Home Assistant's status topic; 'online' there makes the device announce itself again. "
        "None = <discovery_prefix>/status.",
    )
    controls: bool = Field(
        True, description="Offer Home Assistant controls (confirm/ignore the last unknown, reload) with discovery."
    )
    controls_key_id: str | None = Field(
        None,
        min_length=1,
        description="Command key that signs Home Assistant controls; with security.require_signature the "
        "controls are off unless this is set.",
    )

    @property
    def ha_birth_topic(self) -> str:
        return self.birth_topic or f"{self.discovery_prefix}/status"

    @model_validator(mode="after")
    def _one_password(self) -> MqttConfig:
        if self.password is not None and self.password_file is not None:
            raise ValueError("set only one of password and password_file")
        return self


class SecurityConfig(_Section):
    require_signature: bool = Field(False, description="Refuse commands without a valid HMAC-SHA256 signature.")
    keys_file: Path | None = Field(None, description="JSON {key_id: secret} file, mode 0600.")
    max_skew_s: float = Field(300.0, gt=0, le=86400, description="Oldest/newest signed timestamp accepted.")
    max_payload_bytes: int = Field(
        8 * 1024 * 1024, ge=1024, le=256 * 1024 * 1024, description="Larger commands are refused."
    )

    @model_validator(mode="after")
    def _keys_present(self) -> SecurityConfig:
        if self.require_signature and self.keys_file is None and not os.environ.get("EDGEFACE_COMMAND_KEYS"):
            raise ValueError("require_signature needs keys_file or the EDGEFACE_COMMAND_KEYS environment variable")
        return self


class FleetConfig(_Section):
    enabled: bool = Field(
        False, description="Replicate enrollments with the other devices of the fleet through the broker."
    )
    id: str = Field(
        "default",
        pattern=r"^[A-Za-z0-9_-]{1,64}$",
        description="Fleet name: devices with the same id and key share one gallery (edgeface/fleet/<id>/...).",
    )
    key_file: Path | None = Field(
        None, description="File holding the fleet's shared secret (>= 16 characters), mode 0600; signs every record."
    )
    tombstone_horizon_s: float = Field(
        90 * 86400.0,
        ge=60,
        le=10 * 365 * 86400,
        description=(
            "A deletion's retained tombstone is cleared once this old; a device offline for longer "
            "keeps the persons deleted meanwhile (see docs/fleet.md)."
        ),
    )
    max_record_bytes: int = Field(
        256 * 1024,
        ge=4096,
        le=256 * 1024 * 1024,
        description="Records larger than this are not published (counted as too_large); keep under the broker's limit.",
    )

    @model_validator(mode="after")
    def _key_present(self) -> FleetConfig:
        if self.enabled and self.key_file is None:
            raise ValueError("fleet.enabled needs fleet.key_file (the shared secret that signs records)")
        return self


class PipelineConfig(_Section):
    queue_size: int = Field(2, ge=1, le=64, description="Frames buffered between stages; older frames are dropped.")
    stop_timeout_s: float = Field(2.0, gt=0, le=60, description="Join timeout per thread on shutdown.")
    heartbeat_timeout_s: float = Field(10.0, gt=0, le=600, description="A stage silent this long stops watchdog pings.")


class ServiceConfig(_Section):
    reload_on_change: bool = Field(True, description="Reload the database and config file when they change.")
    status_interval_s: float = Field(10.0, gt=0, le=3600, description="Period of the metrics/status update.")


class AttributesConfig(_Section):
    enabled: bool = Field(
        False,
        description="Estimate facial expression (emotion) in 'analyze' replies and recognition events; off by default "
        "because expression inference is a sensitive use that many deployments must not run.",
    )
    model: str = Field("fer_mini_xception", description="Attributes model id from models/manifest.json.")


class StillConfig(_Section):
    max_share: float = Field(
        0.5,
        ge=0.05,
        le=1.0,
        description="Largest share of wall-clock time that still-image requests (identify, verify, detect, "
        "analyze) may keep the command worker busy; a stream of them is paced so the camera pipeline keeps "
        "its CPU. 1.0 = no pacing.",
    )


class LoggingConfig(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Log level.")
    json_format: bool = Field(False, description="One JSON object per log line (journald/Loki friendly).")


class Settings(BaseModel):
    """The whole configuration. Unknown keys are errors so that typos never pass silently."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    device: DeviceConfig = DeviceConfig()
    source: SourceConfig = SourceConfig()
    vision: VisionConfig = VisionConfig()
    decision: DecisionConfig = DecisionConfig()
    liveness: LivenessConfig = LivenessConfig()
    tracker: TrackerConfig = TrackerConfig()
    database: DatabaseConfig = DatabaseConfig()
    unknowns: UnknownsConfig = UnknownsConfig()
    mqtt: MqttConfig = MqttConfig()
    security: SecurityConfig = SecurityConfig()
    fleet: FleetConfig = FleetConfig()
    pipeline: PipelineConfig = PipelineConfig()
    service: ServiceConfig = ServiceConfig()
    logging: LoggingConfig = LoggingConfig()
    attributes: AttributesConfig = AttributesConfig()
    still: StillConfig = StillConfig()

    @property
    def db_path(self) -> Path:
        return self.database.path or self.device.state_dir / "faces.npz"

    @property
    def mqtt_state_path(self) -> Path:
        """The SQLite file of the durable outbox and the signed-command nonce window."""
        return self.device.state_dir / "mqtt.sqlite3"

    @property
    def spool_dir(self) -> Path:
        return self.device.state_dir / "unknowns"


def load_settings(path: Path | None = None, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Build Settings from an optional TOML file, keyword overrides (tests) and the environment
    (``os.environ`` unless given), which beats both so that a unit's ``Environment=`` wins."""
    data = deep_merge(read_toml(path) if path is not None else {}, overrides)
    env = env_overrides(Settings, os.environ if environ is None else environ)
    try:
        return Settings(**deep_merge(data, env.values))
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, str(path) if path else "settings", env)) from exc
