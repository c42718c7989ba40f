"""The ``reward_model`` judge: any Hugging Face sequence-classification reward model (an id or a local
folder); score = its logit for the (prompt, reply) pair."""
from __future__ import annotations

import os

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from ulma.judges.base import ScoreJudge, as_messages, transcript
from ulma.models import resolve_dtype

class RewardModelJudge(ScoreJudge):
    """A Hugging Face sequence-classification reward model (`model`: hub id or local folder).

    The (prompt, reply) pair is given as the model's chat template with the reply as the assistant turn
    when its tokenizer has one, else as a text pair (``"Human: ...\\n\\nAssistant:"``, reply), the layout
    of reward models such as OpenAssistant's. Score = the logit (one label), or logit[1] − logit[0] (two
    labels). Inputs longer than `max_length` lose tokens from their start.
    """

    name = "reward_model"

    def __init__(self, model: str | os.PathLike | None = None, *, tie_margin: float = 0.0, batch_size: int = 8,
                 max_length: int = 1024, device: str | torch.device | None = None, dtype: str | None = None) -> None:
        super().__init__(tie_margin)
        if not model:
            raise ValueError("the reward_model judge needs a model: get_judge('reward_model', model=<hub id or "
                             "folder>), or eval.judge_model in the profile")
        self.tokenizer = AutoTokenizer.from_pretrained(str(model))
        self.tokenizer.truncation_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.device = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model = AutoModelForSequenceClassification.from_pretrained(str(model), dtype=resolve_dtype(dtype))
        self.model.to(self.device).eval()
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        if self.model.config.num_labels not in (1, 2):
            raise ValueError(f"reward model {model} has {self.model.config.num_labels} labels; "
                             "a reward model has 1 (or 2)")
        self.batch_size, self.max_length = int(batch_size), int(max_length)
        self.info.update(model=str(model), num_labels=self.model.config.num_labels)

    def _encode(self, prompts, replies) -> dict[str, torch.Tensor]:
        tok = self.tokenizer
        if getattr(tok, "chat_template", None):
            texts = [tok.apply_chat_template(as_messages(p) + [{"role": "assistant", "content": r}], tokenize=False)
                     for p, r in zip(prompts, replies)]
            return tok(texts, add_special_tokens=False, padding=True, truncation=True, max_length=self.max_length,
                       return_tensors="pt")
        firsts = [transcript(p) + "\n\nAssistant:" for p in prompts]
        return tok(firsts, list(replies), padding=True, truncation=True, max_length=self.max_length,
                   return_tensors="pt")

    @torch.no_grad()
    def score_batch(self, prompts, replies):
        out: list[float] = []
        for i in range(0, len(prompts), self.batch_size):
            batch = self._encode(prompts[i:i + self.batch_size], replies[i:i + self.batch_size])
            logits = self.model(**{k: v.to(self.device) for k, v in batch.items()}).logits.float()
            values = logits[:, 0] if logits.shape[-1] == 1 else logits[:, 1] - logits[:, 0]
            out.extend(values.tolist())
        return out
