"""Real-time control: the policy inside a fixed-rate loop (:class:`Controller`) and the chunk
transitions it shares with the latency-aware evaluation (:mod:`.transitions`)."""

from .controller import Controller
from .transitions import TRANSITIONS, delay_steps, next_queue, parse_latency, request_lead

__all__ = [
    "TRANSITIONS",
    "Controller",
    "delay_steps",
    "next_queue",
    "parse_latency",
    "request_lead",
]
