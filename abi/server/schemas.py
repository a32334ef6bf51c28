"""Pydantic models of every request and response the server speaks: OpenAI's (chat,
completions, embeddings, models, errors), Ollama's (generate, chat, embed, tags, show,
version, ps), the llama.cpp-style extras (tokenize, detokenize, props, health) and the persona
API's chat body.

Requests ignore top-level fields they do not know (clients send many optional ones), but
messages, tool calls and response formats refuse them: a conversation is never silently
mangled. The ranges here are the APIs' own, so out-of-range values are 400s before any work
starts.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

MAX_STOP = 16          # stop strings per request
MAX_N = 8              # choices per request
MAX_PROMPTS = 8        # prompts per completions request
MAX_EMBED_INPUTS = 2048

StopField = Optional[Union[Annotated[str, Field(max_length=1000)],
                           Annotated[list[Annotated[str, Field(max_length=1000)]],
                                     Field(max_length=MAX_STOP)]]]


class Request(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Reply(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- errors -----------------------------------------------------------------------------------

class ErrorInfo(Reply):
    message: str
    type: str
    param: Optional[str] = None
    code: Optional[str] = None


class ErrorResponse(Reply):
    error: ErrorInfo


class OllamaError(Reply):
    error: str


# -- OpenAI: shared ---------------------------------------------------------------------------------

class StreamOptions(Request):
    include_usage: bool = False


class SamplingParams(Request):
    """Sampling fields of chat and completions; top_k, min_p and repeat_penalty are
    llama.cpp-style extensions. An omitted field takes abi's default."""

    max_tokens: Optional[int] = Field(None, ge=0, description="tokens to generate at most")
    temperature: Optional[float] = Field(None, ge=0, le=2)
    top_p: Optional[float] = Field(None, ge=0, le=1)
    top_k: Optional[int] = Field(None, ge=0)
    min_p: Optional[float] = Field(None, ge=0, le=1)
    repeat_penalty: Optional[float] = Field(None, ge=0.01, le=10)
    presence_penalty: Optional[float] = Field(None, ge=-2, le=2)
    frequency_penalty: Optional[float] = Field(None, ge=-2, le=2)
    logit_bias: Optional[dict[str, Annotated[float, Field(ge=-100, le=100)]]] = None
    seed: Optional[int] = None
    stop: StopField = None
    n: int = Field(1, ge=1, le=MAX_N)
    stream: bool = False
    stream_options: Optional[StreamOptions] = None
    user: Optional[str] = None
    ignore_eos: bool = Field(False, description="llama-server's and vLLM's extension: generate past "
                                                "end-of-sequence tokens, up to max_tokens")


class PromptTokensDetails(Reply):
    cached_tokens: int = 0


class Usage(Reply):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails = PromptTokensDetails()


# -- OpenAI: chat -----------------------------------------------------------------------------------

class ContentPart(Request):
    # text is all abi reads: the schema says so, rather than accepting an image to refuse it
    type: Literal["text"]
    text: Optional[str] = None


class Strict(BaseModel):
    """Parts of a request whose every field matters: an unknown one is an error, not dropped."""

    model_config = ConfigDict(extra="forbid")


class FunctionCallIn(Strict):
    name: str
    arguments: str = Field(description="the arguments as JSON text")


class ToolCallIn(Strict):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCallIn


class ChatMessageIn(Strict):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Optional[Union[str, list[ContentPart]]] = None
    name: Optional[str] = None
    tool_calls: Optional[list[ToolCallIn]] = None
    tool_call_id: Optional[str] = None
    # what clients send back from an earlier reply: a refusal stands for the content; the
    # others are refused unless empty
    refusal: Optional[str] = None
    reasoning_content: Optional[str] = None   # an earlier reply's reasoning, for the template
    annotations: Optional[list[Any]] = None
    audio: Optional[Any] = None
    function_call: Optional[Any] = None


class JsonSchemaFormat(Strict):
    name: str = "response"
    description: Optional[str] = None
    schema_: Optional[dict[str, Any]] = Field(None, alias="schema")
    strict: Optional[bool] = None


class ResponseFormat(Strict):
    type: Literal["text", "json_object", "json_schema"] = "text"
    json_schema: Optional[JsonSchemaFormat] = None


class GrammarParams(Request):
    """Constrained output: OpenAI's response_format, and llama-server's grammar (GBNF, or
    Lark with a start rule) and json_schema; one of them at most."""

    response_format: Optional[ResponseFormat] = None
    grammar: Optional[str] = Field(None, max_length=200_000)
    json_schema: Optional[dict[str, Any]] = None


class ChatCompletionRequest(SamplingParams, GrammarParams):
    model: str
    messages: list[ChatMessageIn] = Field(min_length=1)
    max_completion_tokens: Optional[int] = Field(None, ge=0)
    logprobs: bool = False
    top_logprobs: Optional[int] = Field(None, ge=0, le=20)
    tools: Optional[list[dict[str, Any]]] = None
    tool_choice: Optional[Union[str, dict[str, Any]]] = None
    parallel_tool_calls: Optional[bool] = None
    reasoning_format: Optional[Literal["none", "auto", "deepseek"]] = Field(
        None, description="llama-server's: 'none' keeps <think> text inline in content; otherwise "
                          "it comes apart as reasoning_content")
    chat_template_kwargs: Optional[dict[str, Any]] = Field(
        None, description="extra variables for the chat template, e.g. {\"enable_thinking\": false}")


class TopLogprob(Reply):
    token: str
    logprob: float
    bytes: Optional[list[int]] = None


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob] = []


class ChoiceLogprobs(Reply):
    content: Optional[list[TokenLogprob]] = None


class FunctionCall(Reply):
    name: Optional[str] = None
    arguments: str = ""


class ToolCall(Reply):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class AssistantMessage(Reply):
    role: Literal["assistant"] = "assistant"
    content: Optional[str] = None
    reasoning_content: Optional[str] = None
    tool_calls: Optional[list[ToolCall]] = None
    # abi's: why text that looked like a tool call came back as content
    tool_call_error: Optional[str] = None


class ChatChoice(Reply):
    index: int
    message: AssistantMessage
    logprobs: Optional[ChoiceLogprobs] = None
    finish_reason: Optional[str] = None


class ChatCompletion(Reply):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    system_fingerprint: str
    choices: list[ChatChoice]
    usage: Usage


class ToolCallDelta(Reply):
    index: int
    id: Optional[str] = None
    type: Optional[Literal["function"]] = None
    function: Optional[FunctionCall] = None


class Delta(Reply):
    role: Optional[str] = None
    content: Optional[str] = None
    reasoning_content: Optional[str] = None
    tool_calls: Optional[list[ToolCallDelta]] = None
    tool_call_error: Optional[str] = None


class ChunkChoice(Reply):
    index: int
    delta: Delta
    logprobs: Optional[ChoiceLogprobs] = None
    finish_reason: Optional[str] = None


class ChatCompletionChunk(Reply):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    system_fingerprint: str
    choices: list[ChunkChoice]
    usage: Optional[Usage] = None


# -- OpenAI: completions ------------------------------------------------------------------------------

NonEmpty = Annotated[str, Field(min_length=1)]   # an empty prompt has nothing to continue
PromptField = Union[NonEmpty, Annotated[list[NonEmpty], Field(min_length=1, max_length=MAX_PROMPTS)],
                    Annotated[list[int], Field(min_length=1)],
                    Annotated[list[Annotated[list[int], Field(min_length=1)]],
                              Field(min_length=1, max_length=MAX_PROMPTS)]]


class CompletionRequest(SamplingParams, GrammarParams):
    model: str
    prompt: PromptField
    max_tokens: Optional[int] = Field(16, ge=0, description="tokens to generate at most (default 16)")
    echo: bool = False
    logprobs: Optional[int] = Field(None, ge=0, le=20)
    suffix: Optional[str] = None
    best_of: Optional[int] = Field(None, ge=1, le=MAX_N)


class CompletionLogprobs(Reply):
    tokens: list[str]
    token_logprobs: list[Optional[float]]
    top_logprobs: list[Optional[dict[str, float]]]
    text_offset: list[int]


class CompletionChoice(Reply):
    index: int
    text: str
    logprobs: Optional[CompletionLogprobs] = None
    finish_reason: Optional[str] = None


class Completion(Reply):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    system_fingerprint: str
    choices: list[CompletionChoice]
    usage: Optional[Usage] = None


# -- OpenAI: embeddings and models ----------------------------------------------------------------------

class EmbeddingRequest(Request):
    model: str
    input: Union[str, Annotated[list[str], Field(min_length=1, max_length=MAX_EMBED_INPUTS)]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Optional[int] = Field(None, ge=1)
    user: Optional[str] = None


class EmbeddingData(Reply):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: Union[list[float], str]


class EmbeddingUsage(Reply):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(Reply):
    object: Literal["list"] = "list"
    data: list[EmbeddingData]
    model: str
    usage: EmbeddingUsage


class ModelCard(Reply):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "abi"


class ModelList(Reply):
    object: Literal["list"] = "list"
    data: list[ModelCard]


# -- Ollama ---------------------------------------------------------------------------------------------

class OllamaOptions(Request):
    """The options people set most; others are accepted and ignored, as Ollama does."""

    temperature: Optional[float] = Field(None, ge=0, le=100)
    top_k: Optional[int] = Field(None, ge=0)
    top_p: Optional[float] = Field(None, ge=0, le=1)
    min_p: Optional[float] = Field(None, ge=0, le=1)
    repeat_penalty: Optional[float] = Field(None, ge=0.01, le=10)
    repeat_last_n: Optional[int] = Field(None, ge=-1)
    presence_penalty: Optional[float] = Field(None, ge=-2, le=2)
    frequency_penalty: Optional[float] = Field(None, ge=-2, le=2)
    num_predict: Optional[int] = Field(None, ge=-2, description="-1: no limit, -2: fill the context")
    stop: Optional[Annotated[list[Annotated[str, Field(max_length=1000)]], Field(max_length=MAX_STOP)]] = None
    seed: Optional[int] = None
    num_ctx: Optional[int] = Field(None, ge=1)


class OllamaFunctionCall(Strict):
    name: str
    arguments: dict[str, Any] = {}
    index: Optional[int] = None


class OllamaToolCall(Strict):
    function: OllamaFunctionCall


class OllamaMessageIn(Strict):
    role: Literal["system", "user", "assistant", "tool"]
    content: Optional[str] = ""
    images: Optional[list[str]] = None
    tool_calls: Optional[list[OllamaToolCall]] = None
    tool_name: Optional[str] = None
    thinking: Optional[str] = None  # an earlier reply's reasoning, for the template


class OllamaGenerateRequest(Request):
    model: str
    prompt: Optional[str] = None
    suffix: Optional[str] = None
    system: Optional[str] = None
    context: Optional[list[int]] = None
    raw: bool = False
    stream: bool = True
    format: Optional[Union[str, dict[str, Any]]] = None
    images: Optional[list[str]] = None
    options: Optional[OllamaOptions] = None
    keep_alive: Optional[Union[float, str]] = None
    logprobs: bool = False
    top_logprobs: Optional[int] = Field(None, ge=0, le=20)


class OllamaChatRequest(Request):
    model: str
    messages: list[OllamaMessageIn] = []
    stream: bool = True
    format: Optional[Union[str, dict[str, Any]]] = None
    tools: Optional[list[dict[str, Any]]] = None
    tool_choice: Optional[Union[str, dict[str, Any]]] = Field(
        None, description="abi's extension, as in OpenAI: auto, none, required or a function")
    think: Optional[bool] = Field(
        None, description="false: ask the template not to reason (enable_thinking); otherwise "
                          "reasoning comes apart as message.thinking")
    options: Optional[OllamaOptions] = None
    keep_alive: Optional[Union[float, str]] = None
    logprobs: bool = False
    top_logprobs: Optional[int] = Field(None, ge=0, le=20)


class OllamaTokenLogprob(Reply):
    token: str
    logprob: float


class OllamaLogprob(OllamaTokenLogprob):
    top_logprobs: Optional[list[OllamaTokenLogprob]] = None


class OllamaTimings(Reply):
    """Present on the final object of a generation; durations in nanoseconds."""

    model: str
    created_at: str
    done: bool
    done_reason: Optional[str] = None
    total_duration: Optional[int] = None
    load_duration: Optional[int] = None
    prompt_eval_count: Optional[int] = None
    prompt_eval_duration: Optional[int] = None
    eval_count: Optional[int] = None
    eval_duration: Optional[int] = None


class OllamaGenerateResponse(OllamaTimings):
    response: str
    context: Optional[list[int]] = None
    logprobs: Optional[list[OllamaLogprob]] = None


class OllamaMessageOut(Reply):
    role: Literal["assistant"] = "assistant"
    content: str
    thinking: Optional[str] = None
    tool_calls: Optional[list[dict[str, Any]]] = None
    tool_call_error: Optional[str] = None  # abi's, as in the OpenAI reply


class OllamaChatResponse(OllamaTimings):
    message: OllamaMessageOut
    logprobs: Optional[list[OllamaLogprob]] = None


class OllamaEmbedRequest(Request):
    model: str
    input: Union[str, Annotated[list[str], Field(max_length=MAX_EMBED_INPUTS)]]
    truncate: bool = True
    options: Optional[OllamaOptions] = None
    keep_alive: Optional[Union[float, str]] = None
    dimensions: Optional[int] = Field(None, ge=1)


class OllamaEmbedResponse(Reply):
    model: str
    embeddings: list[list[float]]
    total_duration: int
    load_duration: int
    prompt_eval_count: int


class OllamaEmbeddingsRequest(Request):
    """The older /api/embeddings: one prompt, one vector."""

    model: str
    prompt: str
    options: Optional[OllamaOptions] = None
    keep_alive: Optional[Union[float, str]] = None


class OllamaEmbeddingsResponse(Reply):
    embedding: list[float]


class OllamaDetails(Reply):
    parent_model: str = ""
    format: str = "gguf"
    family: str
    families: list[str]
    parameter_size: str
    quantization_level: str


class OllamaModel(Reply):
    name: str
    model: str
    modified_at: str
    size: int
    digest: str
    details: OllamaDetails


class OllamaTags(Reply):
    models: list[OllamaModel]


class OllamaRunningModel(OllamaModel):
    expires_at: str
    size_vram: int
    context_length: int


class OllamaPs(Reply):
    models: list[OllamaRunningModel]


class OllamaShowRequest(Request):
    # one of the two names the model (``name``: older clients)
    model_config = ConfigDict(extra="ignore", json_schema_extra={
        "anyOf": [{"required": ["model"]}, {"required": ["name"]}]})
    model: Optional[str] = Field(None, min_length=1)
    name: Optional[str] = Field(None, min_length=1)
    verbose: bool = False


class OllamaShowResponse(Reply):
    modelfile: str
    parameters: str
    template: str
    details: OllamaDetails
    model_info: dict[str, Any]
    capabilities: list[str]
    modified_at: str


class OllamaVersion(Reply):
    version: str


# -- llama.cpp-style extras ----------------------------------------------------------------------------------

class TokenizeRequest(Request):
    content: str = Field(max_length=4_000_000)
    # JSON booleans only: "false" or 0 would read as a switch the client did not mean
    add_special: StrictBool = False
    parse_special: StrictBool = False
    with_pieces: StrictBool = False


class TokenPiece(Reply):
    id: int
    piece: str


class TokenizeResponse(Reply):
    tokens: list[Union[int, TokenPiece]]


class DetokenizeRequest(Request):
    # the upper bound is the served vocabulary's size (/props n_vocab): past it, 400
    tokens: Annotated[list[Annotated[StrictInt, Field(ge=0)]], Field(max_length=1_000_000)]


class DetokenizeResponse(Reply):
    content: str


class Health(Reply):
    status: Literal["ok", "loading", "error"]
    slots_idle: Optional[int] = None
    slots_processing: Optional[int] = None
    queue_depth: Optional[int] = None
    message: Optional[str] = None


class GenerationSettings(Reply):
    n_ctx: int
    max_tokens: int
    temperature: float
    top_k: int
    top_p: float
    min_p: float
    repeat_penalty: float
    repeat_last_n: int
    presence_penalty: float
    frequency_penalty: float


class Props(Reply):
    model: str
    model_path: str
    embedding_model: Optional[str] = None
    total_slots: int
    queue_limit: int
    n_ctx: int
    n_vocab: int
    max_body_bytes: int = Field(description="largest request body accepted (413 past it)")
    backend: str
    chat_template: str
    bos_token: str
    eos_token: str
    default_generation_settings: GenerationSettings
    build_info: str


# -- llama-server's own /completion ------------------------------------------------------------------

class LlamaCompletionRequest(Strict):
    """llama-server's ``/completion`` fields that abi honours; any other field is an error
    naming it (a sampler abi lacks must not be dropped silently)."""

    prompt: Union[str,
                  Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)]]
    model: Optional[str] = None
    n_predict: int = Field(-1, ge=-1, description="tokens to generate at most; -1: until the context is full")
    temperature: float = Field(0.8, ge=0, le=2)
    top_k: int = Field(40, ge=0)
    top_p: float = Field(0.95, ge=0, le=1)
    min_p: float = Field(0.05, ge=0, le=1)
    repeat_penalty: float = Field(1.1, ge=0.01, le=10)
    repeat_last_n: int = Field(64, ge=-1)
    presence_penalty: float = Field(0.0, ge=-2, le=2)
    frequency_penalty: float = Field(0.0, ge=-2, le=2)
    stop: list[Annotated[str, Field(min_length=1, max_length=1000)]] = Field(default_factory=list,
                                                                            max_length=MAX_STOP)
    seed: int = Field(-1, description="-1: a random seed")
    ignore_eos: bool = False
    logit_bias: Optional[Union[list[tuple[int, Union[float, bool]]], dict[str, Union[float, bool]]]] = None
    n_probs: int = Field(0, ge=0, le=20)
    grammar: Optional[str] = Field(None, max_length=200_000)
    json_schema: Optional[dict[str, Any]] = None
    stream: bool = False
    cache_prompt: bool = Field(True, description="the common prefix with a slot's cache is always reused")
    return_tokens: bool = False


class LlamaTimings(Reply):
    cache_n: int
    prompt_n: int
    prompt_ms: float
    prompt_per_token_ms: float
    prompt_per_second: float
    predicted_n: int
    predicted_ms: float
    predicted_per_token_ms: float
    predicted_per_second: float


class LlamaTokenProb(Reply):
    id: int
    logprob: float
    token: str
    bytes: list[int]


class LlamaProbs(LlamaTokenProb):
    top_logprobs: list[LlamaTokenProb]


class LlamaCompletion(Reply):
    """A /completion answer: the whole one, a streamed piece (``stop`` false) or the last
    streamed object (``stop`` true, ``content`` empty)."""

    index: int = 0
    content: str
    tokens: list[int]
    stop: bool
    id_slot: int = -1
    model: Optional[str] = None
    tokens_predicted: int
    tokens_evaluated: int
    prompt: Optional[str] = None
    has_new_line: Optional[bool] = None
    truncated: Optional[bool] = None
    stop_type: Optional[Literal["none", "eos", "limit", "word"]] = None
    stopping_word: Optional[str] = None
    tokens_cached: Optional[int] = None
    timings: Optional[LlamaTimings] = None
    completion_probabilities: Optional[list[LlamaProbs]] = None


# -- personas -------------------------------------------------------------------------------------

class PersonaChatRequest(Strict):
    """The persona API's chat body (the reference's): an unknown field is an error. The
    content's own checks (not blank, its length) and the persona's name are the persona
    system's, so they read the same from every surface."""

    content: StrictStr
    user_id: str = "anonymous"
    session_id: Optional[str] = None
    persona: Optional[str] = None
