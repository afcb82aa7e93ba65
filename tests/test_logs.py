"""The newest warning or error, for the state document's ``last_error``."""

from __future__ import annotations

import logging

from edgeface.logs import LastProblem


def test_last_problem_keeps_the_newest_warning_or_error() -> None:
    handler = LastProblem()
    logger = logging.getLogger("edgeface.tests.last_problem")
    logger.addHandler(handler)
    try:
        logger.info("all fine")
        assert handler.last() is None
        logger.warning("source %s: %s", "rtsp://cam", "reconnecting")
        last = handler.last()
        assert last is not None
        assert (last["message"], last["level"], last["logger"]) == (
            "source rtsp://cam: reconnecting",
            "WARNING",
            "edgeface.tests.last_problem",
        )
        assert str(last["at"]).endswith("+00:00")
        logger.info("recovered")  # INFO does not clear it: the sensor shows the last problem, not the last line
        assert handler.last() == last
    finally:
        logger.removeHandler(handler)
