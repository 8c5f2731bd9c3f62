"""Reading a Prometheus text exposition in tests: samples by name and labels, and differences
between two scrapes."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families


@dataclass(frozen=True)
class Scrape:
    samples: list[tuple[str, dict[str, str], float]]
    types: dict[str, str]  # family name → type

    @classmethod
    def parse(cls, text: str) -> Scrape:
        samples: list[tuple[str, dict[str, str], float]] = []
        types: dict[str, str] = {}
        for family in text_string_to_metric_families(text):
            # Parsing fails loudly on a malformed exposition; a family named twice is one too.
            assert family.name not in types, f"family {family.name} exposed twice"
            types[family.name] = family.type
            samples.extend((s.name, dict(s.labels), s.value) for s in family.samples)
        return cls(samples, types)

    def matching(self, name: str, **labels: str) -> list[tuple[dict[str, str], float]]:
        return [(l, v) for n, l, v in self.samples if n == name and labels.items() <= l.items()]

    def value(self, name: str, **labels: str) -> float:
        """The sum of the samples of ``name`` whose labels include ``labels`` (0 if none)."""
        return sum(v for _, v in self.matching(name, **labels))

    def delta(self, before: Scrape, name: str, **labels: str) -> float:
        return self.value(name, **labels) - before.value(name, **labels)
