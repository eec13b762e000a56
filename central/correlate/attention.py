"""The learned correlation engine (`[correlate] engine = "attention"`): an attention-based
recurrent model, trained by atlas.train.correlate and served with LiteRT (no TensorFlow here).

Incidents are placed one at a time, in time order: the model scores, for the new incident, each
campaign still open (last incident within the window), reading the campaign's recent history
with a GRU and attending over it by the relations to the new incident. The incident joins the
best-scoring campaign if its probability reaches the model's threshold, else it starts a new
one. Each link names the earlier incident the model attended to most, and its detail says in
plain words the probability, the attention weights over the campaign's incidents, the
relations that mattered, and the two most likely domains of the next stage.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from atlas.central.correlate import features as F
from atlas.central.correlate.rules import Campaign, Event, Link, Topology, scope_of

MODELS = Path(__file__).parent / "models"
DEFAULT_MODEL = MODELS / "attention.tflite"
TOP_ATTENDED = 3  # incidents named in an explanation
# Candidates are scored in batches padded to a multiple of this, so the runtime reallocates its
# tensors only when the open campaigns cross a step, not on every new campaign.
BATCH_STEP = 64


class ModelUnavailable(RuntimeError):
    pass


def _interpreter_class():
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter  # type: ignore[import-not-found]
        except ImportError as exc:
            raise ModelUnavailable("no TFLite runtime for the attention engine: install "
                                   "ai-edge-litert (the central extra)") from exc
    return Interpreter


@dataclass
class Scores:
    link: np.ndarray  # [n]
    next_domain: np.ndarray  # [n, len(DOMAINS)]
    attention: np.ndarray  # [n, T]


class AttentionModel:
    """The .tflite model and its card (threshold, version), run on n candidates at a time."""

    def __init__(self, path: str | Path = DEFAULT_MODEL):
        self.path = Path(path)
        card_path = self.path.with_suffix(".json")
        if not self.path.is_file() or not card_path.is_file():
            raise ModelUnavailable(f"attention model not found: {self.path} (and its .json card);"
                                   " train it with `python -m atlas.train.correlate`")
        card = json.loads(card_path.read_text())
        self.threshold = float(card["threshold"])
        self.version = str(card.get("version", ""))
        self._it = _interpreter_class()(model_path=str(self.path), num_threads=1)
        self._inputs = {name: d for d in self._it.get_input_details()
                        for name in ("history", "relations", "mask", "incident") if name in d["name"]}
        if len(self._inputs) != 4:
            raise ValueError(f"{self.path}: expected inputs history, relations, mask, incident")
        # outputs by their width: link 1, next domain len(DOMAINS), attention T
        self._outputs = {int(d["shape"][-1]): d["index"] for d in self._it.get_output_details()}
        self._batch = 0

    def __call__(self, hist: np.ndarray, rel: np.ndarray, mask: np.ndarray,
                 inc: np.ndarray) -> Scores:
        n = len(hist)
        if n != self._batch:
            for name, arr in (("history", hist), ("relations", rel), ("mask", mask),
                              ("incident", inc)):
                self._it.resize_tensor_input(self._inputs[name]["index"], list(arr.shape))
            self._it.allocate_tensors()
            self._batch = n
        for name, arr in (("history", hist), ("relations", rel), ("mask", mask), ("incident", inc)):
            self._it.set_tensor(self._inputs[name]["index"], arr)
        self._it.invoke()
        out = {w: self._it.get_tensor(i) for w, i in self._outputs.items()}
        return Scores(out[1][:, 0].copy(), out[len(F.DOMAINS)].copy(), out[F.T].copy())


@dataclass
class Placement:
    """Where one incident went: the campaign index (new or joined) and, if joined, the link."""

    campaign: int
    link: Link | None
    next_domains: tuple[str, str] = ("", "")


class Placer:
    """The incremental core: open campaigns, and each new incident placed among them.

    Only campaigns that share more than a place with the new incident (a source, victim,
    identity, target, target network or gateway: see features.keys_as_earlier) are scored, found
    through an index, so placing among a thousand open campaigns scores the few related ones.
    A campaign sharing only a domain or district cannot be told from a concurrent stranger."""

    def __init__(self, model: AttentionModel, topology: Topology, window_s: float):
        self.model, self.topology, self.window_s = model, topology, float(window_s)
        self.states: list[F.CampaignState] = []
        self.links: list[list[Link]] = []
        self.index: dict[tuple[str, str], set[int]] = {}

    def add(self, state: F.CampaignState) -> int:
        """A campaign opened from earlier incidents (the bench opens many at once)."""
        self.states.append(state)
        self.links.append([])
        for fa in state.facts:
            self._index(len(self.states) - 1, fa)
        return len(self.states) - 1

    def _index(self, i: int, fa: F.Facts) -> None:
        for key in F.keys_as_earlier(fa):
            self.index.setdefault(key, set()).add(i)

    def place(self, b: Event) -> Placement:
        fb = F.facts_of(b, self.topology)
        related = set().union(*(self.index.get(k, ()) for k in F.keys_as_later(fb)))
        open_ = sorted(i for i in related
                       if b.time - self.states[i].last_seen <= self.window_s
                       and self.states[i].facts[0].event.time <= b.time)
        if open_:
            cands = [self.states[i] for i in open_]
            pad = -(-len(cands) // BATCH_STEP) * BATCH_STEP
            scores = self.model(*F.pair_tensors(cands, b, self.topology, pad))
            best = int(np.argmax(scores.link[:len(cands)]))
            if scores.link[best] >= self.model.threshold:
                i = open_[best]
                link = self._link(self.states[i], b, scores, best)
                F.grow(self.states[i], b, self.topology)
                self._index(i, self.states[i].facts[-1])
                self.links[i].append(link)
                top2 = np.argsort(-scores.next_domain[best])[:2]
                return Placement(i, link, (F.DOMAINS[top2[0]], F.DOMAINS[top2[1]]))
        return Placement(self.add(F.new_state([b], self.topology)), None)

    def _link(self, state: F.CampaignState, b: Event, scores: Scores, k: int) -> Link:
        recent = state.events[-F.T:]
        weights = scores.attention[k][F.T - len(recent):]
        order = np.argsort(-weights)
        earlier = recent[int(order[0])]
        parts = []
        for j in order[:TOP_ATTENDED]:
            a = recent[int(j)]
            rel = [F.RELATION_WORDS[r] for r, on in F.relations(a, b, self.topology).items() if on]
            parts.append(f"{a.id} {weights[j]:.2f} ({', '.join(rel) or 'no direct relation'})")
        nd = np.argsort(-scores.next_domain[k])[:2]
        detail = (f"learned link p={scores.link[k]:.2f}; attention over the campaign's incidents: "
                  + "; ".join(parts)
                  + f"; next stage likely in {F.DOMAINS[nd[0]]} or {F.DOMAINS[nd[1]]}")
        return Link(earlier.id, b.id, "attention", scope_of(earlier, b), detail)


class AttentionEngine:
    """The CorrelationEngine protocol over the learned model (see the module doc)."""

    name = "attention"

    def __init__(self, window_s: float, model: AttentionModel | None = None):
        self.window_s = float(window_s)
        self.model = model or AttentionModel()

    def campaigns(self, events: list[Event], topology: Topology) -> list[Campaign]:
        placer = Placer(self.model, topology, self.window_s)
        for e in sorted(events, key=lambda e: (e.time, e.id)):
            placer.place(e)
        out = [Campaign("", list(s.events), list(lk)) for s, lk in zip(placer.states, placer.links)]
        out.sort(key=lambda c: (c.start, c.events[0].id))
        for i, c in enumerate(out, 1):
            c.id = f"campaign-{i}"
        return out
