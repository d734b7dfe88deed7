"""Fixtures for notifier tests: real loopback HTTP receivers and test alerts."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from notify_receivers import Receiver, make_alert

from loglens.models import Alert


@pytest.fixture
def receiver_factory() -> Iterator[Callable[..., Receiver]]:
    started: list[Receiver] = []

    def factory(**kwargs: Any) -> Receiver:
        r = Receiver(**kwargs).start()
        started.append(r)
        return r

    yield factory
    for r in started:
        r.stop()


@pytest.fixture
def receiver(receiver_factory: Callable[..., Receiver]) -> Receiver:
    return receiver_factory()


@pytest.fixture
def alert_factory() -> Callable[..., Alert]:
    return make_alert
