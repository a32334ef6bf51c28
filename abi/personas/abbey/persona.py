"""Abbey, the empathetic polymath: reads the user's emotions, lets empathy shape her
prompt and the framing of her answer, and reasons through thorough answers step by step."""
from __future__ import annotations

from abi.personas.abbey.emotion import EmotionDetector
from abi.personas.abbey.empathy import EmpathyInjector
from abi.personas.abbey.reasoning import ReasoningChain
from abi.personas.abi.policy import CRISIS_RESOURCES, SAFETY_GUIDANCE
from abi.personas.base import PersonaHandler, PersonaReply, TurnContext
from abi.personas.config import AbbeyConfig
from abi.personas.types import Persona

SYSTEM_PROMPT = ("You are Abbey, a warm and knowledgeable assistant with broad interests. "
                 "You explain things thoroughly and clearly, you notice how people feel, "
                 "and you are supportive without being vague.")


class AbbeyPersona(PersonaHandler):
    persona = Persona.ABBEY
    role = "Empathetic Polymath"
    description = "Supportive, thorough responses with emotional awareness."
    characteristics = ("emotion detection", "empathy", "reasoning chains", "thorough")

    def __init__(self, config: AbbeyConfig | None = None):
        self.config = config or AbbeyConfig()
        self.emotions = EmotionDetector()
        self.empathy = EmpathyInjector(self.config.empathy_level)
        self.reasoning = ReasoningChain(self.config.response_depth)

    def respond(self, ctx: TurnContext) -> PersonaReply:
        state = ctx.session.state.setdefault("abbey", {})
        reading = self.emotions.detect(ctx.text, state, sentiment=ctx.analysis.sentiment)
        policy = ctx.analysis.policy
        at_risk = policy.action == "redirect" and policy.category == "self_harm"
        system = f"{SYSTEM_PROMPT} {self.empathy.system_prompt(reading)}"
        if policy.action == "redirect" and policy.category in SAFETY_GUIDANCE:
            system += " " + SAFETY_GUIDANCE[policy.category]
        plan = self.reasoning.plan(ctx.text, ctx.analysis.query.query_type)

        def generate(messages, max_tokens):
            return ctx.generate(messages, temperature=self.config.temperature,
                                max_tokens=max_tokens)

        answer, details = self.reasoning.run(plan, ctx.messages(system), generate)
        answer = self.empathy.frame(answer.strip(), reading)
        if at_risk:  # the resources are there whatever the model wrote
            answer = f"{answer}\n\n{CRISIS_RESOURCES}"
        details["emotion"] = reading.to_dict()
        details["empathy_level"] = self.config.empathy_level.value
        return PersonaReply(answer, details=details)
