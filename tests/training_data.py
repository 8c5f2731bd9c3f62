"""Datasets a LoRA learns in seconds, shared by the fine-tuning tests (worker and server alike)."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

# Words the tiny tokenizers hold as single tokens; KEYWORD decides the label.
WORDS = ["apple", "river", "mountain", "quiet", "bright", "engine", "garden", "window", "silver", "paper",
         "ocean", "forest", "music", "yellow", "planet", "candle", "market", "winter", "summer"]
KEYWORD = "dragon"
# One answer per thing asked about.
ANSWERS = {"apple": "It is a red fruit.", "river": "Water flows in it.", "dragon": "It breathes fire."}


def keyword_rows(count: int, seed: int, *, regression: bool = False) -> list[dict[str, Any]]:
    """Six random words; half the rows hold KEYWORD, which makes them ``yes`` (or value 1.0)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        words = rng.sample(WORDS, 6)
        hit = rng.random() < 0.5
        if hit:
            words[rng.randrange(len(words))] = KEYWORD
        target = {"value": 1.0 if hit else 0.0} if regression else {"label": "yes" if hit else "no"}
        rows.append({"text": " ".join(words), **target})
    return rows


def answer_rows(count: int) -> list[dict[str, Any]]:
    """Questions about the things of ANSWERS, each with its one answer: chat rows and
    prompt/completion rows in turn."""
    rng = random.Random(0)
    rows: list[dict[str, Any]] = []
    for i in range(count):
        word = rng.choice(list(ANSWERS))
        question = f"Tell me about the {word}."
        rows.append({"prompt": question, "completion": " " + ANSWERS[word]} if i % 2 else
                    {"messages": [{"role": "user", "content": question},
                                  {"role": "assistant", "content": ANSWERS[word]}]})
    return rows


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


# A decision on the real all-MiniLM-L6-v2 (Playground experiments): two classes by description,
# messages any reader sorts at once, and a harder split whose words mislead a zero-shot reading.
URGENT = {"name": "urgent", "description": "an urgent message that needs immediate action: something is broken, "
                                           "down, or an emergency"}
NOT_URGENT = {"name": "not_urgent", "description": "a routine message that can wait: a question, a thank you, a "
                                                   "general comment"}
CLEAR = [
    ("The production server is down and customers cannot log in!", "urgent"),
    ("URGENT: the database is corrupted, we are losing data right now", "urgent"),
    ("Fire alarm in building 3, evacuate immediately", "urgent"),
    ("Our website has crashed and checkout is broken", "urgent"),
    ("The payment system is failing for every customer, please fix asap", "urgent"),
    ("Emergency: the water pipe burst in the server room", "urgent"),
    ("Thanks for the great presentation yesterday!", "not_urgent"),
    ("Thank you for your help, have a nice weekend.", "not_urgent"),
    ("Thanks a lot, that answers my question.", "not_urgent"),
    ("A general comment: the new logo looks nice.", "not_urgent"),
    ("No rush, but could you share the meeting notes sometime?", "not_urgent"),
    ("Thank you all for a lovely team dinner.", "not_urgent"),
]


# A harder split: calm words for emergencies, alarming words in routine notes.
_SYSTEMS = ["the payroll system", "the checkout page", "the VPN", "the order database", "the shared drive",
            "the email server"]
_PEOPLE = ["the whole sales team", "our biggest customer", "the night shift", "every store", "the finance team",
           "the support desk"]
_TEMPLATES = {
    "urgent": ["{s} stopped answering a few minutes ago and {p} is stuck.",
               "Could you look at {s} now? {p} cannot work until it is back.",
               "{p} reports that {s} is losing data as we speak.",
               "Heads up: {s} went offline and {p} is blocked right now."],
    "not_urgent": ["For the record, last month's problem with {s} was fixed long ago; nothing to do.",
                   "When you have time next week, {p} would like a short tour of {s}.",
                   "{p} says thanks for the help with {s} yesterday.",
                   "Just curious: who originally set up {s} for {p}?"],
}


def harder_rows() -> list[dict[str, str]]:
    rows = [{"text": (lambda t: t[0].upper() + t[1:])(template.format(s=s, p=p)), "label": label}
            for label, templates in _TEMPLATES.items() for template in templates for s in _SYSTEMS for p in _PEOPLE]
    random.Random(0).shuffle(rows)
    return rows


# NER: KEYWORD, wherever it stands among random words, is an entity of type BEAST.
BEAST = "beast"


def entity_rows(count: int, seed: int) -> list[dict[str, Any]]:
    """Six random words; about half the rows hold KEYWORD, marked as a BEAST entity."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        words = rng.sample(WORDS, 6)
        if rng.random() < 0.5:
            words[rng.randrange(len(words))] = KEYWORD
        text = " ".join(words)
        start = text.find(KEYWORD)
        entities = [{"start": start, "end": start + len(KEYWORD), "label": BEAST}] if start >= 0 else []
        rows.append({"text": text, "entities": entities})
    return rows


# NER on the real all-MiniLM-L6-v2 (Playground experiments): cities and people, by description.
CITY = {"name": "city", "description": "a city, such as Paris, London or Tokyo"}
PERSON = {"name": "person", "description": "a person's name, such as John Smith or Maria"}
# Sentences a zero-shot reading gets right, with the entities in them: (text, [(entity, type)]).
CLEAR_ENTITIES = [
    ("John Smith flew to Paris.", [("John Smith", "person"), ("Paris", "city")]),
    ("Maria lives in Berlin.", [("Maria", "person"), ("Berlin", "city")]),
    ("The meeting is on Tuesday about the budget.", []),
    ("Please send the report by Friday.", []),
]
_FIRST_NAMES = ["Peter", "Ahmed", "David", "Olga", "Yuki", "Pedro", "Liam", "Fatima", "Chen", "Sofia", "Omar", "Ingrid"]
_CITIES = ["Madrid", "Cairo", "Oslo", "Lima", "Vienna", "Dublin", "Nairobi", "Lisbon", "Seoul", "Prague", "Quito",
           "Warsaw"]
_ENTITY_TEMPLATES = ["{p} moved to {c} last year.", "Yesterday {p} visited {c}.", "{p} works in {c} now.",
                     "The train from {c} was late, said {p}.", "Our office in {c} is run by {p}.",
                     "Nothing happened in the meeting today."]


def people_and_places_rows(count: int, seed: int) -> list[dict[str, Any]]:
    """Sentences naming a person and a city (some neither), with both marked."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        person, city = rng.choice(_FIRST_NAMES), rng.choice(_CITIES)
        text = rng.choice(_ENTITY_TEMPLATES).format(p=person, c=city)
        entities = [{"start": text.index(name), "end": text.index(name) + len(name), "label": label}
                    for name, label in ((person, PERSON["name"]), (city, CITY["name"])) if name in text]
        rows.append({"text": text, "entities": sorted(entities, key=lambda e: e["start"])})
    return rows
