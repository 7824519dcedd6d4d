"""voiced's timer messages as Wyoming's timer events (wyoming.timer, Wyoming 1.10), for satellites and Home
Assistant. Wyoming's events describe timers only; alarms and reminders are sent as timers too (a satellite
shows a countdown either way), with the reminder's words as the name."""

from __future__ import annotations

from wyoming.event import Event
from wyoming.timer import TimerCancelled, TimerFinished, TimerStarted, TimerUpdated

from protocol import messages as m


def timer_event(msg: object) -> Event | None:
    """The Wyoming event for a voiced timer message, or None for any other message."""
    if isinstance(msg, m.TimerStarted):
        h, rem = divmod(int(round(msg.total_s)), 3600)
        mi, s = divmod(rem, 60)
        name = msg.name or (msg.text if msg.kind == "reminder" else None) or (msg.kind if msg.kind != "timer" else None)
        return TimerStarted(id=msg.id, total_seconds=int(round(msg.remaining_s)), name=name,
                            start_hours=h or None, start_minutes=mi or None, start_seconds=s or None).event()  # fmt: skip
    if isinstance(msg, m.TimerUpdated):
        return TimerUpdated(id=msg.id, is_active=msg.active, total_seconds=int(round(msg.remaining_s))).event()
    if isinstance(msg, m.TimerCancelled):
        return TimerCancelled(id=msg.id).event()
    if isinstance(msg, m.TimerFinished):
        return TimerFinished(id=msg.id).event()
    return None
