"""Task events as a user reads them: one reading of Nomad's api.TaskEvent for every test.

An event's text is spread over several fields, and which one carries it depends on who wrote
the event: the client's own events use DisplayMessage, a driver's error lands in DriverError
and Details["driver_error"], a failed download in DownloadError, a restart's reason in
RestartReason and Details["restart_reason"]. `text()` joins them all, each distinct text
once, so a test searches what a person would see (`nomad alloc status`) whatever the field.

    failure = events.last(run.events(), "Driver Failure")
    assert "node problem" in events.text(failure), events.describe(run.events())
"""

from __future__ import annotations

from collections.abc import Iterable

# Top-level fields of api.TaskEvent that hold words (in the order they are shown); numbers,
# flags and times are left out. Details' values come after them.
TEXT_FIELDS = ("DisplayMessage", "Message", "DriverError", "DriverMessage", "DownloadError",
               "SetupError", "ValidationError", "KillError", "KillReason", "RestartReason",
               "VaultError", "FailedSibling", "TaskSignalReason", "GenericSource")
_FLAGS = ("true", "false")


def text(event: dict) -> str:
    """Everything a user can read about one event, each distinct text once, in order, joined
    by " | " (empty for an event that says nothing beyond its type)."""
    parts = [event.get(field) for field in TEXT_FIELDS]
    parts += [v for v in (event.get("Details") or {}).values() if str(v) not in _FLAGS]
    return " | ".join(dict.fromkeys(str(p).strip() for p in parts if p and str(p).strip()))


def line(event: dict) -> str:
    """"<Type>: <text>" (just the type when the event says nothing more)."""
    said = text(event)
    kind = event.get("Type", "?")
    return f"{kind}: {said}" if said else kind


def describe(events: Iterable[dict]) -> str:
    """One line per event, for an assertion's message."""
    return "\n".join(line(e) for e in events) or "(no events)"


def types(events: Iterable[dict]) -> list[str]:
    return [e.get("Type", "?") for e in events]


def of_type(events: Iterable[dict], event_type: str) -> list[dict]:
    return [e for e in events if e.get("Type") == event_type]


def last(events: Iterable[dict], event_type: str) -> dict:
    """The last event of `event_type`; fails listing the events there are."""
    __tracebackhide__ = True
    events = list(events)
    found = of_type(events, event_type)
    assert found, f"no {event_type!r} event among:\n{describe(events)}"
    return found[-1]


def first(events: Iterable[dict], event_type: str) -> dict:
    __tracebackhide__ = True
    events = list(events)
    found = of_type(events, event_type)
    assert found, f"no {event_type!r} event among:\n{describe(events)}"
    return found[0]


def containing(events: Iterable[dict], words: str) -> list[dict]:
    """Events whose text() contains `words`."""
    return [e for e in events if words in text(e)]


def seconds(event: dict) -> float:
    """The event's time, in seconds since the epoch (Nomad gives nanoseconds)."""
    return int(event["Time"]) / 1e9


def seconds_between(earlier: dict, later: dict) -> float:
    return (int(later["Time"]) - int(earlier["Time"])) / 1e9
