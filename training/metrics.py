"""Word error rate and entity accuracy, grouped by any key (cohort, condition, engine)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field


def edit_distance(ref: Sequence[str], hyp: Sequence[str]) -> int:
    previous = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        current = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (r != h))
        previous = current
    return previous[-1]


def contains_phrase(words: Sequence[str], phrase: Sequence[str]) -> bool:
    """Whether ``phrase`` occurs in ``words``, its last word possibly possessive: "call samesh's home number"
    names "samesh" (a sentence says a contact's name that way, and the entity is the name)."""
    n = len(phrase)
    if not n:
        return True
    head, last = list(phrase[:-1]), phrase[-1]
    return any(list(words[i : i + n - 1]) == head and words[i + n - 1] in (last, f"{last}'s")
               for i in range(len(words) - n + 1))


@dataclass
class Score:
    errors: int = 0
    ref_words: int = 0
    entities: int = 0
    entities_correct: int = 0
    utterances: int = 0

    def add(self, ref: str, hyp: str, entities: Iterable[str]) -> None:
        ref_words, hyp_words = ref.split(), hyp.split()
        self.errors += edit_distance(ref_words, hyp_words)
        self.ref_words += len(ref_words)
        self.utterances += 1
        for entity in entities:
            self.entities += 1
            self.entities_correct += contains_phrase(hyp_words, entity.split())

    @property
    def wer(self) -> float:
        return self.errors / max(1, self.ref_words)

    @property
    def entity_accuracy(self) -> float | None:
        return self.entities_correct / self.entities if self.entities else None

    def to_dict(self) -> dict[str, float | int | None]:
        acc = self.entity_accuracy
        return {
            "wer_percent": round(100.0 * self.wer, 2),
            "entity_accuracy_percent": None if acc is None else round(100.0 * acc, 2),
            "utterances": self.utterances,
            "words": self.ref_words,
            "entities": self.entities,
        }


@dataclass
class Scoreboard:
    """Scores keyed by (group name, group value), e.g. ("condition", "clean")."""

    scores: dict[tuple[str, str], Score] = field(default_factory=lambda: defaultdict(Score))

    def add(self, groups: dict[str, str], ref: str, hyp: str, entities: Iterable[str]) -> None:
        entities = list(entities)
        self.scores[("all", "all")].add(ref, hyp, entities)
        for key, value in groups.items():
            self.scores[(key, value)].add(ref, hyp, entities)

    def to_dict(self) -> dict[str, dict[str, dict[str, float | int | None]]]:
        out: dict[str, dict[str, dict[str, float | int | None]]] = defaultdict(dict)
        for (key, value), score in sorted(self.scores.items()):
            out[key][value] = score.to_dict()
        return dict(out)
