"""Drive a real Engine from test code: submit, collect events, wait."""

from __future__ import annotations

import queue
from dataclasses import dataclass, field

from app.engine.types import (
    Event,
    Failed,
    Finished,
    GenerationRequest,
    SamplingParams,
    Started,
    TextDelta,
)

GREEDY = SamplingParams(temperature=0.0)


@dataclass
class Run:
    """The events of one request, collected as they arrive."""

    request: GenerationRequest
    events: "queue.Queue[Event]" = field(default_factory=queue.Queue)
    seen: list[Event] = field(default_factory=list)

    def sink(self, event: Event) -> None:
        self.events.put(event)

    def next(self, timeout: float = 60.0) -> Event:
        event = self.events.get(timeout=timeout)
        self.seen.append(event)
        return event

    def wait(self, timeout: float = 120.0) -> "Run":
        while not self.seen or not isinstance(self.seen[-1], (Finished, Failed)):
            self.next(timeout)
        return self

    @property
    def started(self) -> Started:
        return next(e for e in self.seen if isinstance(e, Started))

    @property
    def finished(self) -> Finished:
        assert isinstance(self.seen[-1], Finished), self.seen[-1]
        return self.seen[-1]

    @property
    def failed(self) -> Failed:
        assert isinstance(self.seen[-1], Failed), self.seen[-1]
        return self.seen[-1]

    @property
    def deltas(self) -> list[TextDelta]:
        return [e for e in self.seen if isinstance(e, TextDelta)]

    @property
    def text(self) -> str:
        return "".join(d.text for d in self.deltas)


def submit(engine, **kwargs) -> Run:
    kwargs.setdefault("sampling", GREEDY)
    run = Run(GenerationRequest(**kwargs))
    engine.submit(run.request, run.sink)
    return run


def generate(engine, **kwargs) -> Run:
    return submit(engine, **kwargs).wait()


def chat(content: str) -> list[dict]:
    return [{"role": "user", "content": content}]
