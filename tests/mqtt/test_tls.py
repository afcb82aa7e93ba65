"""MqttLink over TLS against a real Mosquitto, with a throwaway CA made by the openssl command-line tool."""

from __future__ import annotations

import logging
import os
import re
import shutil
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from edgeface.config import TlsConfig
from edgeface.errors import BrokerError
from tests.conftest import Broker, MqttProbe, _wait_port
from tests.mqtt.test_link import running_link

OPENSSL = shutil.which("openssl")
pytestmark = pytest.mark.skipif(OPENSSL is None, reason="openssl command-line tool not found (makes the test CA)")

# Short on purpose: a refused handshake fails at once, so this only bounds how long the test waits to see it.
REFUSED_WAIT_S = 1.0


@dataclass(frozen=True)
class Pki:
    """A test CA (ca.crt), a server certificate for 127.0.0.1/localhost (server.*), a client one (client.*),
    and a CA that signed none of them (stranger.crt)."""

    dir: Path

    def __getitem__(self, name: str) -> Path:
        return self.dir / name


def _openssl(workdir: Path, *args: str) -> None:
    assert OPENSSL is not None
    subprocess.run([OPENSSL, *args], cwd=workdir, check=True, capture_output=True)


_EC = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")


def _make_ca(workdir: Path, name: str) -> None:
    ca_ext = ("-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    _openssl(workdir, "req", "-x509", *_EC, *ca_ext, "-subj", f"/CN=edgeface test {name}", "-days", "2",
             "-keyout", f"{name}.key", "-out", f"{name}.crt")  # fmt: skip


def _make_leaf(workdir: Path, name: str, serial: int, *extensions: str) -> None:
    _openssl(workdir, "req", "-new", *_EC, "-subj", f"/CN=edgeface test {name}",
             "-keyout", f"{name}.key", "-out", f"{name}.csr")  # fmt: skip
    (workdir / f"{name}.ext").write_text(
        "\n".join(["basicConstraints=critical,CA:FALSE", "keyUsage=critical,digitalSignature", *extensions]) + "\n"
    )
    # -set_serial rather than -CAcreateserial: no serial file to share, and OpenSSL 1.1 accepts it too.
    _openssl(workdir, "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-set_serial", str(serial), "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.crt")  # fmt: skip


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    workdir = tmp_path_factory.mktemp("pki")
    _make_ca(workdir, "ca")
    _make_ca(workdir, "stranger")
    _make_leaf(workdir, "server", 2, "subjectAltName=IP:127.0.0.1,DNS:localhost", "extendedKeyUsage=serverAuth")
    _make_leaf(workdir, "client", 3, "extendedKeyUsage=clientAuth")
    return Pki(workdir)


@dataclass
class TlsBroker(Broker):
    """conftest's Broker whose one listener speaks TLS, optionally demanding a client certificate."""

    pki: Pki | None = None
    require_certificate: bool = False

    def start(self) -> None:
        assert self.pki is not None
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        lines = [f"listener {self.port} 127.0.0.1", "persistence false", "log_dest stderr", "log_type error"]
        if os.geteuid() == 0:
            lines.append("user root")  # the default drop to user "mosquitto" could not read the keys in tmp_path
        lines += [
            "allow_anonymous true",
            f"cafile {self.pki['ca.crt']}",
            f"certfile {self.pki['server.crt']}",
            f"keyfile {self.pki['server.key']}",
            f"require_certificate {str(self.require_certificate).lower()}",
        ]
        conf = self.workdir / "mosquitto.conf"
        conf.write_text("\n".join(lines) + "\n")
        self.proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _wait_port(self.port, 10.0)


def _broker(tmp_path_factory: pytest.TempPathFactory, pki: Pki, require_certificate: bool) -> Iterator[Broker]:
    broker = TlsBroker(tmp_path_factory.mktemp("mosquitto-tls"), pki=pki, require_certificate=require_certificate)
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[Broker]:
    yield from _broker(tmp_path_factory, pki, require_certificate=False)


@pytest.fixture(scope="module")
def mtls_broker(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[Broker]:
    yield from _broker(tmp_path_factory, pki, require_certificate=True)


def _tls_probe(port: int, context: ssl.SSLContext, topic_filter: str = "edgeface/#") -> MqttProbe:
    # "localhost" exercises the certificate's DNS SAN; the link under test uses the IP one.
    return MqttProbe(port, topic_filter, host="localhost", tls_context=context)


@pytest.fixture
def tls_probe(tls_broker: Broker, pki: Pki) -> Iterator[MqttProbe]:
    probe = _tls_probe(tls_broker.port, ssl.create_default_context(cafile=pki["ca.crt"]))
    yield probe
    probe.close()


def _errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


# --- server authentication -----------------------------------------------------------------------


def test_link_over_tls_goes_online_and_round_trips_a_command(
    tls_broker: Broker, tls_probe: MqttProbe, pki: Pki
) -> None:
    with running_link(tls_broker.port, tls=TlsConfig(ca_file=pki["ca.crt"])) as h:
        h.link.wait_connected(10)
        tls_probe.wait_for(h.topics.status, predicate=lambda m: m.payload == b"online")
        late = _tls_probe(tls_broker.port, ssl.create_default_context(cafile=pki["ca.crt"]), h.topics.status)
        try:
            retained = late.wait_for(h.topics.status)
            assert (retained.payload, retained.retain) == (b"online", True)
        finally:
            late.close()
        tls_probe.publish(h.topics.command("status"), b"{}")
        assert h.commands.get(timeout=10) == ("status", b"{}")
        h.link.publish(h.topics.state, {"ok": True})
        assert tls_probe.wait_json(h.topics.state) == {"ok": True}
    assert tls_probe.wait_for(h.topics.status).payload == b"offline"


@pytest.mark.expect_errors
# paho 2.2 does not close the socket whose handshake failed (Client._ssl_wrap_socket); CPython closes it on GC.
@pytest.mark.filterwarnings("ignore:unclosed <ssl.SSLSocket:ResourceWarning")
@pytest.mark.parametrize("trust", ["stranger CA", "system store"])
def test_untrusted_server_certificate_is_a_clear_broker_error(
    tls_broker: Broker, pki: Pki, trust: str, caplog: pytest.LogCaptureFixture
) -> None:
    tls = TlsConfig(ca_file=pki["stranger.crt"] if trust == "stranger CA" else None)
    with running_link(tls_broker.port, tls=tls) as h:
        with pytest.raises(BrokerError, match=r"not connected within .*refused \(TLS: .*certificate verify failed"):
            h.link.wait_connected(REFUSED_WAIT_S)
        assert not h.link.connected
    errors = _errors(caplog)
    assert len(errors) == 1  # once, not at every retry
    assert "refused the connection: TLS: " in errors[0] and "tls.ca_file" in errors[0]
    assert not [r for r in caplog.records if "cannot reach broker" in r.getMessage()]


def test_unreadable_ca_file_fails_at_start(tmp_path: Path) -> None:
    missing = tmp_path / "missing-ca.crt"
    with pytest.raises(BrokerError, match=re.escape(f"MQTT TLS setup failed (ca {missing}")):
        running_link(1, tls=TlsConfig(ca_file=missing)).__enter__()


# --- mutual TLS ----------------------------------------------------------------------------------


def test_mutual_tls_with_the_client_certificate(mtls_broker: Broker, pki: Pki) -> None:
    tls = TlsConfig(ca_file=pki["ca.crt"], cert_file=pki["client.crt"], key_file=pki["client.key"])
    with running_link(mtls_broker.port, tls=tls) as h:
        h.link.wait_connected(10)
        probe = _tls_probe(mtls_broker.port, _client_context(pki), h.topics.status)
        try:
            assert probe.wait_for(h.topics.status).payload == b"online"
        finally:
            probe.close()


@pytest.mark.expect_errors
def test_mutual_tls_without_a_client_certificate_is_refused(
    mtls_broker: Broker, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    with running_link(mtls_broker.port, tls=TlsConfig(ca_file=pki["ca.crt"])) as h:
        with pytest.raises(BrokerError, match=r"not connected within .*refused \(TLS: .*certificate required"):
            h.link.wait_connected(REFUSED_WAIT_S)
        assert not h.link.connected
    assert [m for m in _errors(caplog) if "certificate required" in m and "tls.cert_file" in m]


def _client_context(pki: Pki) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=pki["ca.crt"])
    context.load_cert_chain(pki["client.crt"], pki["client.key"])
    return context
