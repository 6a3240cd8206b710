"""The generative judges over chat completions: EditScoreReward and VerifierReward with a generate_fn that sends
each call as a request (judges.GenerateRemote); their metadata() adds the endpoints' counters (never the key)."""
from __future__ import annotations

from ..editscore import EditScoreReward
from ..verifier import Sampling, VerifierReward
from .judges import GenerateRemote, RemoteChat, RemoteCounters


class RemoteEditScore(RemoteCounters, EditScoreReward):
    def __init__(self, chat: RemoteChat, send_top_k: bool = True, **options):
        generate = GenerateRemote(chat, send_top_k)

        def generate_fn(calls, decoding):
            temperature = decoding.temperature if decoding.do_sample else 0.0
            fields = generate.fields(decoding.max_new_tokens, temperature, decoding.top_p, decoding.top_k,
                                     decoding.seed)
            return generate([c.text for c in calls], [c.images for c in calls], fields)

        super().__init__(None, generate_fn=generate_fn, **options)
        self.chat = self.remote = chat

    def metadata(self) -> dict:
        return {**super().metadata(), "origin": "remote", "remote": self.stats()}


class RemoteVerifier(RemoteCounters, VerifierReward):
    def __init__(self, chat: RemoteChat, send_top_k: bool = True, sampling: Sampling | dict | None = None,
                 **options):
        sampling = Sampling(**sampling) if isinstance(sampling, dict) else sampling or Sampling()
        generate = GenerateRemote(chat, send_top_k)
        fields = generate.fields(sampling.max_new_tokens, sampling.temperature, sampling.top_p, sampling.top_k,
                                 sampling.seed)
        super().__init__(lambda prompts, images: generate(prompts, images, fields), origin="remote", **options)
        self.chat = self.remote = chat

    def metadata(self) -> dict:
        return {**super().metadata(), "remote": self.stats()}
