"""Replication through a real Mosquitto bridge: device A on broker A, device B on broker B."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgeface.config import load_settings
from edgeface.errors import ConfigError
from edgeface.fleet.records import FleetKey, PersonState, encode_person
from edgeface.fleet.service import load_key
from edgeface.matching.records import PersonRecord, SampleRecord, now_iso
from tests.conftest import MqttProbe
from tests.fleet.conftest import FLEET_SECRET, Bridged, Stack, same_gallery, wait_until


def _has(stack: Stack, person_id: str, **fields: Any) -> bool:
    stack.db.reload()
    try:
        person = stack.db.get(person_id)
    except Exception:
        return False
    return all(getattr(person, k) == v for k, v in fields.items())


def _gone(stack: Stack, person_id: str) -> bool:
    stack.db.reload()
    return all(p.id != person_id for p in stack.db.list()[1])


def test_enroll_rename_delete_travel_both_ways(
    bridged: Bridged, make_stack: Callable[..., Stack], embeddings: dict[str, np.ndarray]
) -> None:
    a = make_stack("door-a", bridged.a.port).start()
    b = make_stack("door-b", bridged.b.port).start()
    alice = a.db.add_person("Alice", {"access": True}, [embeddings["obama.jpg"], embeddings["obama2.jpg"]])
    wait_until(lambda: _has(b, alice.id, name="Alice"), what="Alice on B")
    got = b.db.get(alice.id)
    assert got.metadata == {"access": True} and [s.id for s in got.samples] == [s.id for s in alice.samples]
    assert got.updated == alice.updated and got.created == alice.created

    b.db.rename(alice.id, "Alice B.")
    wait_until(lambda: _has(a, alice.id, name="Alice B."), what="rename on A")
    b.db.add_negative(alice.id, embeddings["biden.jpg"])
    wait_until(lambda: _has(a, alice.id) and a.db.get(alice.id).negatives == 1, what="negative on A")
    dropped = alice.samples[1].id
    b.db.delete_sample(alice.id, dropped)
    wait_until(lambda: all(s.id != dropped for s in a.db.get(alice.id).samples), what="sample deletion on A")
    assert a.db.get(alice.id).positives == 1
    b.db.delete_person(alice.id)
    wait_until(lambda: _gone(a, alice.id), what="delete on A")
    wait_until(lambda: a.status()["tombstones"] == 1 and b.status()["tombstones"] == 1, what="tombstones")
    status = a.status()
    assert status["applied"] >= 2 and status["deleted"] == 1 and status["refused"] == 0
    assert status["last_applied"]["person_id"] == alice.id


def test_device_stopped_while_the_fleet_changes_catches_up_on_restart(
    bridged: Bridged, make_stack: Callable[..., Stack], embeddings: dict[str, np.ndarray]
) -> None:
    a = make_stack("door-a", bridged.a.port).start()
    b = make_stack("door-b", bridged.b.port).start()
    people = [a.db.add_person(n, {}, [embeddings[p]]) for n, p in (("P1", "obama.jpg"), ("P2", "biden.jpg"))]
    wait_until(lambda: all(_has(b, p.id) for p in people), what="two persons on B")
    b.stop()
    a.db.rename(people[0].id, "P1 renamed")
    a.db.delete_person(people[1].id)
    p3 = a.db.add_person("P3", {"badge": 7}, [embeddings["obama3.jpg"]])
    wait_until(lambda: a.status()["pending"] == 0 and a.status()["in_sync"] == 2, what="A published")
    b.start()
    wait_until(
        lambda: _has(b, people[0].id, name="P1 renamed") and _gone(b, people[1].id) and _has(b, p3.id),
        what="B converged after its restart",
    )
    assert same_gallery(a.people(), b.people())
    wait_until(lambda: b.status()["in_sync"] == 2 and b.status()["pending"] == 0, what="B in sync")


def test_edits_made_while_a_device_is_stopped_are_published_when_it_returns(
    bridged: Bridged, make_stack: Callable[..., Stack], embeddings: dict[str, np.ndarray]
) -> None:
    a = make_stack("door-a", bridged.a.port).start()
    b = make_stack("door-b", bridged.b.port).start()
    p1 = a.db.add_person("P1", {}, [embeddings["obama.jpg"]])
    p2 = a.db.add_person("P2", {}, [embeddings["biden.jpg"]])
    wait_until(lambda: _has(b, p1.id) and _has(b, p2.id), what="both on B")
    a.stop()
    # What `edgeface db rename/delete` does while the daemon is down: the file changes behind its back.
    a.db.rename(p1.id, "P1 offline edit")
    a.db.delete_person(p2.id)
    a.start()
    wait_until(lambda: _has(b, p1.id, name="P1 offline edit") and _gone(b, p2.id), what="offline edits on B")
    assert a.status()["applied"] == 0  # its own retained records came back and were not re-applied


def test_concurrent_edits_converge_to_the_same_database(
    bridged: Bridged, make_stack: Callable[..., Stack], embeddings: dict[str, np.ndarray]
) -> None:
    a = make_stack("door-a", bridged.a.port).start()
    b = make_stack("door-b", bridged.b.port).start()
    bob = a.db.add_person("Bob", {}, [embeddings["obama.jpg"]])
    wait_until(lambda: _has(b, bob.id), what="Bob on B")
    # Partition the devices, then both edit Bob: samples added on each side, and two renames.
    a.stop()
    b.stop()
    a_sample = a.db.add_samples(bob.id, [embeddings["obama2.jpg"]])[0]
    a.db.rename(bob.id, "Bob (A)")
    b_sample = b.db.add_samples(bob.id, [embeddings["obama3.jpg"]])[0]
    b.db.rename(bob.id, "Bob (B)")  # later: wins the name
    b.db.add_negative(bob.id, embeddings["biden.jpg"])
    a.start()
    b.start()

    def converged() -> bool:
        x, y = a.people(), b.people()
        return same_gallery(x, y) and x[bob.id][0] == "Bob (B)"

    wait_until(converged, timeout=30, what="same database on A and B")
    merged = a.db.get(bob.id)
    assert {a_sample, b_sample} <= {s.id for s in merged.samples}
    assert merged.positives == 3 and merged.negatives == 1
    a.db.export(a.root / "export.npz")
    b.db.export(b.root / "export.npz")


def test_forged_and_foreign_model_records_are_refused_and_counted(
    bridged: Bridged, make_stack: Callable[..., Stack], embeddings: dict[str, np.ndarray]
) -> None:
    b = make_stack("door-b", bridged.b.port).start()
    probe = MqttProbe(bridged.a.port, "edgeface/fleet/#")
    try:
        now = now_iso()
        person = PersonRecord(
            "ab12cd34ef567890", "Mallory", "{}", now, now, (SampleRecord("s1", "positive", now, "image", None, False),)
        )
        state = PersonState(person, embeddings["obama.jpg"][None, :], "intruder")
        topic = "edgeface/fleet/site/persons/ab12cd34ef567890"
        # Signed with a key that is not the fleet's.
        wrong = encode_person(
            state, fleet_id="site", publisher="intruder", model_id=b.model_id, key=FleetKey(b"not-the-fleet-key-000")
        )
        probe.publish(topic, wrong, retain=True)
        wait_until(lambda: b.status()["refused"] == 1, what="wrong key refused")
        # Signed with the fleet key, then altered on the way.
        good = encode_person(
            state, fleet_id="site", publisher="intruder", model_id=b.model_id, key=FleetKey(FLEET_SECRET.encode())
        )
        tampered = json.loads(good)
        tampered["metadata"] = {"access": True}
        probe.publish(topic, json.dumps(tampered), retain=True)
        wait_until(lambda: b.status()["refused"] == 2, what="tampered record refused")
        probe.publish(topic, json.dumps({k: v for k, v in tampered.items() if k not in ("sig", "key_id")}), retain=True)
        wait_until(lambda: b.status()["refused"] == 3, what="unsigned record refused")
        # Correctly signed, but embeddings of another model: skipped.
        other = encode_person(
            state, fleet_id="site", publisher="door-x", model_id="sface_2021dec", key=FleetKey(FLEET_SECRET.encode())
        )
        probe.publish(topic, other, retain=True)
        wait_until(lambda: b.status()["other_model"] == 1, what="other model skipped")
        assert _gone(b, "ab12cd34ef567890")
        probe.publish(topic, b"", retain=True)
    finally:
        probe.close()


def test_a_change_written_by_another_process_is_published_after_the_reload(
    bridged: Bridged, make_stack: Callable[..., Stack], embeddings: dict[str, np.ndarray]
) -> None:
    a = make_stack("door-a", bridged.a.port).start()
    b = make_stack("door-b", bridged.b.port).start()
    carol = a.db.add_person("Carol", {}, [embeddings["biden.jpg"]])
    wait_until(lambda: _has(b, carol.id, name="Carol"), what="Carol on B")
    # `edgeface db rename` run as its own process on door A's database file.
    env = {**os.environ, "EDGEFACE_DEVICE__STATE_DIR": str(a.root), "EDGEFACE_FLEET__ENABLED": "false"}
    done = subprocess.run(
        [sys.executable, "-m", "edgeface", "db", "rename", carol.id, "Carol R."],
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert a.db.reload()  # what the daemon's file watcher does when the file changes
    wait_until(lambda: _has(b, carol.id, name="Carol R."), what="the CLI's rename on B")
    wait_until(lambda: a.status()["in_sync"] == 1 and a.status()["published"] == 2, what="A in sync")


def test_fleet_needs_a_private_key_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="key_file"):
        load_settings(None, fleet={"enabled": True})
    key = tmp_path / "fleet.key"
    key.write_text(FLEET_SECRET)
    key.chmod(0o644)
    settings = load_settings(None, fleet={"enabled": True, "key_file": str(key)})
    with pytest.raises(ConfigError, match="chmod 600"):
        load_key(settings)


def test_two_persons_enrolled_with_one_name_at_two_doors_both_stay_under_distinct_names(
    bridged: Bridged, make_stack: Callable[..., Stack], embeddings: dict[str, np.ndarray]
) -> None:
    a = make_stack("door-a", bridged.a.port)
    b = make_stack("door-b", bridged.b.port)
    dave_a = a.db.add_person("Dave", {}, [embeddings["obama.jpg"]])
    dave_b = b.db.add_person("Dave", {}, [embeddings["biden.jpg"]])
    a.start()
    b.start()

    def converged() -> bool:
        x, y = a.people(), b.people()
        return len(x) == 2 and same_gallery(x, y) and len({v[0] for v in x.values()}) == 2

    wait_until(converged, timeout=30, what="both Daves on both doors")
    names = {p.id: p.name for p in a.db.list()[1]}
    assert names[dave_a.id].startswith("Dave") and names[dave_b.id].startswith("Dave")


def test_tombstone_older_than_the_horizon_is_cleared_from_the_broker(
    bridged: Bridged, make_stack: Callable[..., Stack], embeddings: dict[str, np.ndarray]
) -> None:
    a = make_stack("door-a", bridged.a.port)
    a.horizon_s = 3600
    a.start()
    erin = a.db.add_person("Erin", {}, [embeddings["obama.jpg"]])
    a.db.delete_person(erin.id)
    wait_until(lambda: a.status()["tombstones"] == 1 and a.status()["pending"] == 0, what="tombstone published")
    topic = f"edgeface/fleet/site/persons/{erin.id}"
    probe = MqttProbe(bridged.b.port, topic)  # the tombstone is retained, on both sides of the bridge
    try:
        assert json.loads(probe.wait_for(topic).payload)["kind"] == "tombstone"
    finally:
        probe.close()
    a.stop()
    state_file = a.root / "fleet-site.json"
    state = json.loads(state_file.read_text())
    state["tombstones"][erin.id]["deleted"] = "2020-01-01T00:00:00.000+00:00"  # deleted long ago
    state_file.write_text(json.dumps(state))
    a.start()
    wait_until(lambda: a.status()["tombstones"] == 0, what="tombstone forgotten")

    def cleared() -> bool:
        probe = MqttProbe(bridged.b.port, topic)
        try:
            probe.wait_for(topic, timeout=1.0)
        except AssertionError:
            return True  # no retained message any more
        finally:
            probe.close()
        return False

    wait_until(cleared, what="retained tombstone removed on both brokers")


def test_a_record_over_the_size_limit_is_not_published_and_is_counted(
    bridged: Bridged, make_stack: Callable[..., Stack], embeddings: dict[str, np.ndarray]
) -> None:
    a = make_stack("door-a", bridged.a.port)
    a.max_record_bytes = 8192  # a person with 20 samples is a ~10.7 KB record
    a.start()
    b = make_stack("door-b", bridged.b.port).start()
    small = a.db.add_person("Small", {}, [embeddings["obama.jpg"]])
    large = a.db.add_person("Large", {}, [embeddings["biden.jpg"]] * 20)
    wait_until(lambda: _has(b, small.id), what="the small record on B")
    wait_until(lambda: a.status()["too_large"] == 1, what="the large record refused")
    assert _gone(b, large.id)
