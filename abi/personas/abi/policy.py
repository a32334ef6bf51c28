"""Content policy: the categories of ``taxonomy.yaml`` (violent and non-violent crimes,
weapons, sex crimes, hate, harassment, privacy, self-harm, sexual content, prompt injection,
specialised advice), personal data in the message, and sexual content involving minors.

- the model categories: a calibrated classifier on the message's sentence embedding and the
  negation-aware cue counts of ``policy_cues.yaml`` (``semantic.py``), trained at first use
  on ``personas/data/policy.yaml`` (the "none" class also takes every query-classifier
  example, so ordinary requests teach it what is fine); when the embedding model cannot be
  loaded, a logistic regression on n-grams and the same cues (``textmodel.py``);
- pii: detectors for e-mail addresses, phone numbers, payment cards (Luhn-checked), US
  social security numbers, IBANs (mod-97-checked) and API keys/secrets; matches are masked;
- sex_crimes is also raised by a rule: sexual terms together with a minor (words, or a
  stated age under 18), unless the message is protective or educational.

Each category has an action (``PolicyConfig.actions``, defaults in ``taxonomy.yaml``):
block (Abi answers with a safe reply), redirect (to ``redirect_to`` with safety guidance),
disclaim (answered, with a disclaimer), redact (PII masked, the request goes on) or allow.
The probabilities of every block or redirect category add up to the violation score, so a
request torn between two harmful categories is still caught.
"""
from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field

from abi.personas.abi.cues import cue_lexicon
from abi.personas.abi.semantic import LEXICAL_MODEL, Embedder, SemanticClassifier, load_embedder
from abi.personas.abi.sentiment import _lexicon as sentiment_lexicon
from abi.personas.config import PolicyConfig
from abi.personas.data import load_examples
from abi.personas.textmodel import TextClassifier, tokenize
from abi.personas.types import Persona

MODEL_CATEGORIES = ("violent_crimes", "nonviolent_crimes", "weapons", "sex_crimes", "hate",
                    "harassment", "privacy", "self_harm", "sexual_content", "prompt_injection",
                    "specialized_advice")
_ACTION_RANK = {"allow": 0, "disclaim": 1, "redact": 2, "redirect": 3, "block": 4}

SAFE_ANSWERS = {
    "self_harm": (
        "I'm really sorry you're going through this, and I'm glad you said something. "
        "You deserve support right now. Please reach out to someone who can help: in the US "
        "call or text 988 (Suicide & Crisis Lifeline), in the UK and Ireland call Samaritans "
        "on 116 123, or find a local line at findahelpline.com. If you are in immediate "
        "danger, call your local emergency number. If you'd like, we can keep talking."),
    "violent_crimes": (
        "I can't help with anything meant to hurt someone. If you or someone else is in "
        "danger right now, please contact local emergency services. If you're dealing with "
        "anger or a conflict, I'm glad to talk it through or help find a safer way forward."),
    "nonviolent_crimes": (
        "I can't help with that: it would help commit fraud, theft, a break-in, unauthorised "
        "access, malware, counterfeiting or drug crime. I'm glad to help with the legitimate "
        "side, such as protecting yourself or your organisation, or how the law works."),
    "weapons": (
        "I can't help make, convert, acquire or use weapons, explosives or chemical, "
        "biological, radiological or nuclear agents. I can talk about their history, the "
        "law, or safety."),
    "hate": (
        "I won't write content that demeans people for who they are. I'm happy to discuss "
        "the topic itself, its history, or how to respond to prejudice."),
    "privacy": (
        "I can't look up, track or surveil a private person or expose their personal "
        "details. If you're worried about your own privacy or safety, I can help with that."),
    "sexual_content": (
        "I don't write explicit sexual content. I'm glad to help with romance that keeps "
        "the details off the page, or with questions about relationships and sexual health."),
    "harassment": (
        "I won't help write something meant to demean, threaten or target a person. If "
        "you're in a conflict with someone, I can help you put your concerns into words "
        "respectfully, or think through how to handle the situation."),
    "sex_crimes": (
        "I can't help with that. Sexual content involving minors, sexual assault, coercion, "
        "exploitation and non-consensual images are never acceptable. If someone may be at "
        "risk, please contact local authorities or a child-protection or assault hotline."),
    "prompt_injection": (
        "I can't set aside or reveal my instructions, but I'm happy to help with your actual "
        "question."),
    "pii": (
        "That message contains personal data (such as card numbers or contact details), "
        "which I won't process. Please remove it and ask again."),
}

CRISIS_RESOURCES = (
    "If you're thinking about suicide or self-harm, please reach out now: in the US call or "
    "text 988, in the UK and Ireland call Samaritans on 116 123, or find a local line at "
    "findahelpline.com. In immediate danger, call your local emergency number.")

DISCLAIMERS = {
    "specialized_advice": (
        "This is general information, not professional medical, legal or financial advice; "
        "for your own situation, please consult a qualified doctor, lawyer or financial "
        "adviser."),
}

SAFETY_GUIDANCE = {
    "self_harm": (
        "The user may be at risk of self-harm. Respond with warmth and without judgement; "
        "take them seriously, do not give any information about methods, encourage them to "
        "reach out to a crisis line or someone they trust, and invite them to keep talking."),
}


# --- PII ------------------------------------------------------------------------------

def luhn_ok(digits: str) -> bool:
    total, double = 0, False
    for ch in reversed(digits):
        d = int(ch)
        if double:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
        double = not double
    return total % 10 == 0


def iban_ok(text: str) -> bool:
    s = re.sub(r"\s", "", text).upper()
    if not 15 <= len(s) <= 34:
        return False
    moved = s[4:] + s[:4]
    number = "".join(str(int(ch, 36)) for ch in moved)
    return int(number) % 97 == 1


@dataclass
class PIIMatch:
    kind: str     # email, phone, card, ssn, iban, secret
    start: int
    end: int
    text: str

    @property
    def mask(self) -> str:
        return f"[{self.kind.upper()}]"


_EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
_CARD = re.compile(r"(?<![\d-])(?:\d[ -]?){12,18}\d(?![\d-])")
_SSN = re.compile(r"(?<!\d)(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?!\d)")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b")
# not part of a longer run of digit groups (a card number, an ID)
_PHONE = re.compile(r"(?<![\w+])(?<!\d[ .-])(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)[ .-]?|\d{2,4}[ .-])"
                    r"\d{3,4}[ .-]?\d{3,4}(?![\w-])(?![ .]\d)")
_SECRET = re.compile(
    r"\b(?:sk-[A-Za-z0-9_-]{20,}|AKIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{30,}|"
    r"xox[abprs]-[A-Za-z0-9-]{10,}|AIza[0-9A-Za-z_-]{35})\b"
    r"|(?i:\b(?:api[_ -]?key|secret|password|passwd|access[_ -]?token)\b\s*(?:is|[:=])\s*)"
    r"(?P<value>[^\s'\"]{8,})")


def find_pii(text: str) -> list[PIIMatch]:
    """Personal data in ``text``, earliest first, without overlaps."""
    found: list[PIIMatch] = []

    def add(kind, start, end):
        if not any(start < m.end and m.start < end for m in found):
            found.append(PIIMatch(kind, start, end, text[start:end]))

    for m in _SECRET.finditer(text):
        if m.group("value"):
            add("secret", m.start("value"), m.end("value"))
        else:
            add("secret", m.start(), m.end())
    for m in _EMAIL.finditer(text):
        add("email", m.start(), m.end())
    for m in _IBAN.finditer(text):
        if iban_ok(m.group()):
            add("iban", m.start(), m.end())
    for m in _SSN.finditer(text):
        add("ssn", m.start(), m.end())
    for m in _CARD.finditer(text):
        digits = re.sub(r"\D", "", m.group())
        if 13 <= len(digits) <= 19 and luhn_ok(digits):
            add("card", m.start(), m.end())
    for m in _PHONE.finditer(text):
        digits = re.sub(r"\D", "", m.group())
        if 10 <= len(digits) <= 15:
            add("phone", m.start(), m.end())
    return sorted(found, key=lambda m: m.start)


def redact(text: str, matches: list[PIIMatch] | None = None) -> str:
    """``text`` with each piece of personal data replaced by its mask (``[EMAIL]`` ...)."""
    matches = find_pii(text) if matches is None else matches
    out, pos = [], 0
    for m in sorted(matches, key=lambda m: m.start):
        out.append(text[pos:m.start])
        out.append(m.mask)
        pos = m.end
    out.append(text[pos:])
    return "".join(out)


# --- sexual content involving minors ----------------------------------------------------

_SEXUAL = {"sex", "sexual", "sexually", "sexy", "erotic", "erotica", "nude", "nudes", "naked",
           "porn", "porno", "pornographic", "explicit", "lewd", "nsfw", "fetish", "orgasm",
           "aroused", "seduce", "seductive", "intercourse", "horny", "kinky", "smut"}
_MINOR = {"child", "children", "kid", "kids", "minor", "minors", "underage", "preteen",
          "toddler", "schoolgirl", "schoolboy", "loli", "shota", "teen", "teens", "teenager",
          "teenagers", "boy", "girl", "boys", "girls", "daughter", "son", "stepdaughter",
          "stepson", "niece", "nephew", "pupil", "student"}
_PRODUCE = {"write", "story", "describe", "roleplay", "rp", "generate", "picture", "pictures",
            "image", "images", "photo", "photos", "pics", "video", "scene", "fantasy",
            "fanfic", "draw", "create", "imagine", "chat"}
_PROTECTIVE = ("sex education", "sex ed", "sexual health", "puberty", "talk to my",
               "talk with my", "explain to my", "protect", "report", "signs of", "grooming",
               "abuse", "abused", "safe from", "prevent", "awareness", "therapist", "police",
               "consent education", "is it normal", "pediatrician", "doctor")
_AGE = re.compile(r"\b(\d{1,2})\s*(?:-\s*)?(?:years?|yrs?|y)\s*(?:-\s*)?(?:old|o)\b|"
                  r"\b(\d{1,2})\s*yo\b|\baged?\s+(\d{1,2})\b")


def sexual_minors_score(text: str) -> float:
    """0.95 when ``text`` asks to produce sexual content involving a minor, else 0 (other
    questions that mention both, mostly protective ones, are left to the classifier)."""
    low = text.lower()
    words = set(tokenize(low))
    sexual = bool(words & _SEXUAL) and not any(p in low for p in ("sex education", "sex ed ",
                                                                  "sexual health"))
    ages = [int(next(g for g in m.groups() if g)) for m in _AGE.finditer(low)]
    minor = bool(words & _MINOR) or any(a < 18 for a in ages)
    if not (sexual and minor) or any(p in low for p in _PROTECTIVE):
        return 0.0
    return 0.95 if words & _PRODUCE else 0.0


# --- the trained categories ------------------------------------------------------------

def policy_features(text: str) -> dict[str, float]:
    """Cue counts (negated cues apart) and the conjunctions a linear model cannot form:
    harm words about oneself, violent words aimed at someone or asked about as a how-to,
    insults or harassment aimed at a person or group."""
    import math

    c = cue_lexicon("policy_cues").counts(text, negations=frozenset(
        sentiment_lexicon()["negations"]))
    feats = {f"pcue_{k}": 1.0 - math.exp(-v / 2.0) for k, v in c.items()}
    has = {k: min(1, v) for k, v in c.items()}
    feats["and_selfharm_self"] = has["self_harm_terms"] * has["first_person"]
    feats["and_death_self"] = has["death_terms"] * has["first_person"]
    feats["and_violence_victim"] = has["violence_terms"] * has["victims"]
    feats["and_violence_howto"] = has["violence_terms"] * has["instruction_ask"]
    feats["and_insult_target"] = has["insults"] * max(has["victims"], has["group_terms"],
                                                      has["harassment_acts"])
    feats["and_harass_target"] = has["harassment_acts"] * max(has["victims"], has["group_terms"])
    feats["and_harm_support"] = max(has["self_harm_terms"], has["violence_terms"],
                                    has["harassment_acts"]) * has["support_context"]
    return feats


class PolicyModel:
    """The lexical classifier of MODEL_CATEGORIES (plus "none"): the fallback when the
    embedding model cannot be loaded, and the baseline the evaluation compares with."""

    kind = "lexical"

    def __init__(self, model: TextClassifier):
        self.model = model

    @classmethod
    def train(cls, examples=None, l2: float = 1e-4) -> "PolicyModel":
        examples = policy_examples() if examples is None else examples
        texts = [t for t, _ in examples]
        labels = [lab for _, lab in examples]
        _check_labels(labels)
        return cls(TextClassifier.train(texts, labels, l2=l2, extra=policy_features))

    def scores(self, text: str) -> dict[str, float]:
        return self.model.predict(text).probabilities


class SemanticPolicyModel:
    """The embedding classifier of MODEL_CATEGORIES (plus "none")."""

    kind = "semantic"

    def __init__(self, model: SemanticClassifier):
        self.model = model

    @classmethod
    def train(cls, embedder: Embedder, examples=None, store: bool = True
              ) -> "SemanticPolicyModel":
        examples = policy_examples() if examples is None else examples
        _check_labels([lab for _, lab in examples])
        return cls(SemanticClassifier.train("policy", embedder, examples, policy_features,
                                            store=store))

    def scores(self, text: str) -> dict[str, float]:
        return self.model.predict(text)


def policy_examples() -> list[tuple[str, str]]:
    """policy.yaml, and every query example as "none" unless policy.yaml labels that text
    (a symptom question is factual to the router and specialised advice to the policy)."""
    labelled = list(load_examples("policy"))
    seen = {t for t, _ in labelled}
    return labelled + [(t, "none") for t, _ in load_examples("queries") if t not in seen]


def _check_labels(labels) -> None:
    bad = set(labels) - set(MODEL_CATEGORIES) - {"none"}
    if bad:
        raise ValueError(f"unknown policy labels: {sorted(bad)}")


_SHARED: dict[str, PolicyModel | SemanticPolicyModel] = {}
_LOCK = threading.Lock()


def shared_policy_model(embedding_model: str | None = None):
    """The process-wide policy model for ``embedding_model`` (None: the default embedding
    model; "lexical": none), trained on first use; lexical when embeddings cannot load."""
    key = embedding_model or ""
    with _LOCK:
        if key not in _SHARED:
            embedder = None if embedding_model == LEXICAL_MODEL else load_embedder(embedding_model)
            _SHARED[key] = (SemanticPolicyModel.train(embedder) if embedder is not None
                            else PolicyModel.train())
        return _SHARED[key]


# --- the checker -------------------------------------------------------------------------

@dataclass
class PolicyViolation:
    category: str
    score: float
    action: str
    evidence: str


@dataclass
class PolicyResult:
    """What the policy found in one message. ``action`` is the strongest action of the
    violations (block > redirect > redact > allow); ``category``/``score`` are those of the
    violation that decided it; ``text`` is the message with PII masked."""

    action: str = "allow"
    category: str | None = None
    score: float = 0.0
    violations: list[PolicyViolation] = field(default_factory=list)
    text: str = ""
    pii: list[PIIMatch] = field(default_factory=list)
    redirect_to: Persona | None = None
    scores: dict[str, float] = field(default_factory=dict)

    @property
    def blocked(self) -> bool:
        return self.action == "block"

    @property
    def categories(self) -> list[str]:
        return [v.category for v in self.violations]

    @property
    def disclaimer(self) -> str | None:
        """The disclaimer the answer must carry (specialised advice), or None."""
        for v in self.violations:
            if v.action == "disclaim":
                return DISCLAIMERS.get(v.category, DISCLAIMERS["specialized_advice"])
        return None

    def safe_answer(self) -> str:
        return SAFE_ANSWERS.get(self.category or "", SAFE_ANSWERS["violent_crimes"])

    def to_dict(self) -> dict:
        return {"action": self.action, "category": self.category, "score": round(self.score, 4),
                "violations": [{"category": v.category, "score": round(v.score, 4),
                                "action": v.action, "evidence": v.evidence}
                               for v in self.violations]}


class PolicyChecker:
    """``check(text) -> PolicyResult`` under a ``PolicyConfig``."""

    def __init__(self, config: PolicyConfig | None = None, model=None,
                 embedding_model: str | None = None):
        self.config = config or PolicyConfig()
        self._model = model
        self.embedding_model = embedding_model

    @property
    def model(self) -> PolicyModel | SemanticPolicyModel:
        if self._model is None:
            self._model = shared_policy_model(self.embedding_model)
        return self._model

    def check(self, text: str) -> PolicyResult:
        cfg = self.config
        if not cfg.enabled:
            return PolicyResult(text=text)
        violations: list[PolicyViolation] = []
        scores = self.model.scores(text)
        # harmful categories share their probability mass: a request split between
        # "weapons" and "violent_crimes" is still a violation, named by the larger
        harmful = [c for c in MODEL_CATEGORIES if cfg.actions[c] in ("block", "redirect")]
        p_harm = sum(scores.get(c, 0.0) for c in harmful)
        if harmful and p_harm >= cfg.threshold:
            top = max(harmful, key=lambda c: scores.get(c, 0.0))
            violations.append(PolicyViolation(
                top, p_harm, cfg.actions[top],
                f"classifier probability {scores.get(top, 0.0):.2f} ({p_harm:.2f} harmful)"))
        for category in MODEL_CATEGORIES:
            p = scores.get(category, 0.0)
            if category not in harmful and p >= cfg.threshold:
                violations.append(PolicyViolation(category, p, cfg.actions[category],
                                                  f"classifier probability {p:.2f}"))
        s = sexual_minors_score(text)
        if s >= cfg.threshold:
            violations.append(PolicyViolation("sex_crimes", s, cfg.actions["sex_crimes"],
                                              "sexual terms together with a minor"))
        pii = find_pii(text)
        scores["pii"] = 1.0 if pii else 0.0
        if pii:
            kinds = sorted({m.kind for m in pii})
            violations.append(PolicyViolation("pii", 1.0, cfg.actions["pii"],
                                              "found: " + ", ".join(kinds)))
        masked = redact(text, pii) if pii and cfg.actions["pii"] in ("redact", "block",
                                                                      "redirect") else text
        result = PolicyResult(text=masked, violations=violations, pii=pii, scores=scores)
        acting = [v for v in violations if v.action != "allow"]
        if acting:
            top = max(acting, key=lambda v: (_ACTION_RANK[v.action], v.score))
            result.action, result.category, result.score = top.action, top.category, top.score
            if top.action == "redirect":
                result.redirect_to = cfg.redirect_to
        return result

    def redact_output(self, text: str) -> tuple[str, list[PIIMatch]]:
        """A generated answer with any personal data masked (PII leakage), and the matches."""
        if not (self.config.enabled and self.config.redact_output):
            return text, []
        pii = find_pii(text)
        return (redact(text, pii), pii) if pii else (text, [])
