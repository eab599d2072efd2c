"""The OpenAI Responses API (``POST /v1/responses``), translated to and from Chat Completions.

request.py   Responses body -> Chat Completions body (validation, tools, items)
response.py  chat.completion -> Response object; items, ids, usage, per-request ``Context``
stream.py    chat.completion.chunk stream -> Responses stream events
seal.py      AES-GCM sealing under HKDF-derived keys (reasoning ``encrypted_content``, stored responses)
dialect.py   the Responses dialect of the pipeline (uses the above and ``app.stored_responses``)
"""
