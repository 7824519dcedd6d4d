"""A model served elsewhere (vLLM, llama.cpp's server, Ollama) as voiced's brain, over OpenAI's chat completions.

request: the request body of a turn (pure); sse: the streamed reply decoded (pure); link: when to probe a server
that went away (pure, `now` a parameter); client: httpx on its own event loop, cancellable; brain: RemoteBrain,
the `voiced.brain.Brain` the pipeline talks to.
"""
