"""Does fine-tuning with everything `auto` work, for each method? Small tasks made here, each
trained through the API on the default base model and scored by the job's own built-in
evaluation on held-out examples whose phrasings (and, for style and echo, subjects) never
appear in training:

supervised
1. classify: a customer message into one of four labels, answered as JSON;
2. extract: a name, a city and a quantity from an order message, into JSON;
3. rewrite: a casual sentence into a formal one (contractions and slang spelled out);
DPO
4. style: a capital city asked for, JSON preferred over a plain sentence of the same length;
   style-sft: the same from an SFT model first trained to answer in sentences;
reinforcement
5. echo: "reply with the word only", graded by a formula of string_check (exact) and
   fuzzy_match (close); echo-sft: the same from an SFT model answering "The word is X.".

Goals with the default CPU model: classify +0.6 exact match; DPO preference accuracy >= 0.9 on
held-out pairs and greedy answers in the preferred style (valid JSON) +0.5 absolute; RFT mean
reward +0.3 absolute. Usage: `python bench/quality.py [--tasks style,echo] [--train 150]
[--held-out 40] [--hyperparameters '{"n_epochs": 1}'] [--no-serving]`.
"""

import argparse
import json
import random
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
from openai.types.fine_tuning import FineTuningJob

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from storage.base_models import DEFAULT_BASE_MODEL  # noqa: E402
from tests.support.server import TuneserveServer  # noqa: E402
from tests.support.training import upload, wait_for, wait_for_evaluation  # noqa: E402
from training.prepare import prepare_default_model  # noqa: E402

Example = dict[str, object]

# --- classify: labels by topic; training and held-out messages use disjoint templates. ---

CLASSIFY_SYSTEM = ('Classify the customer message. Answer only with JSON: {"label": L} where '
                   "L is billing, technical, shipping or account.")
TOPICS = {
    "billing": (["charged twice", "a refund", "my invoice", "the payment", "a wrong price",
                 "the subscription fee", "my credit card bill", "an extra charge"],
                ["I was hit with {x} for the {item}", "Please look into {x} on the {item}",
                 "Why is there {x} for my {item}?", "Can someone explain {x} on the {item}"],
                ["Something is off with {x} regarding the {item}!",
                 "{x} for the {item} makes no sense to me"]),
    "technical": (["a crash", "an error message", "a frozen screen", "a login failure",
                   "a bug", "the app not loading", "a broken update", "a sync problem"],
                  ["I keep getting {x} when I open the {item}",
                   "There is {x} every time I use the {item}",
                   "Help, {x} on the {item} since yesterday",
                   "How do I fix {x} with the {item}?"],
                  ["Since this morning: {x} while using the {item}.",
                   "{x} again on the {item}, what should I do"]),
    "shipping": (["the delivery", "my package", "the tracking number", "the courier",
                  "the parcel", "the shipment", "the delivery address", "the shipping date"],
                 ["Where is {x} for my {item}?", "{x} for the {item} never arrived",
                  "I need an update on {x} of my {item}",
                  "Has {x} with my {item} been sent yet?"],
                 ["Still waiting on {x}; the {item} was due last week.",
                  "Any news about {x}? I ordered the {item} ages ago"]),
    "account": (["my password", "my username", "my profile", "my email address",
                 "two-factor login", "my account settings", "my membership", "my user account"],
                ["I want to change {x} for the {item} store",
                 "How can I reset {x}? I use the {item}",
                 "Please delete {x} linked to the {item}",
                 "I cannot update {x} on the {item} site"],
                ["Need to modify {x} (I signed up for the {item}).",
                 "{x} should be different, it came with the {item}"]),
}
ITEMS = ["laptop", "phone", "headphones", "coffee machine", "camera", "tablet", "printer",
         "monitor", "speaker", "watch"]


def classify(rng: random.Random, held_out: bool) -> Example:
    label = rng.choice(sorted(TOPICS))
    things, train_templates, held_templates = TOPICS[label]
    template = rng.choice(held_templates if held_out else train_templates)
    text = template.format(x=rng.choice(things), item=rng.choice(ITEMS))
    return chat(CLASSIFY_SYSTEM, text[0].upper() + text[1:], json.dumps({"label": label}))


# --- extract: the same three fields, said differently in training and held out. ---

EXTRACT_SYSTEM = ('Extract the order as JSON: {"name": str, "city": str, "quantity": int}. '
                  "Answer only with the JSON.")
NAMES = ["Alice Martin", "Bob Chen", "Carla Diaz", "David Okafor", "Emma Novak", "Farid Haddad",
         "Grace Kim", "Hugo Laurent", "Ines Silva", "Jonas Berg", "Keiko Sato", "Liam Walsh"]
CITIES = ["Paris", "Berlin", "Lisbon", "Toronto", "Osaka", "Nairobi", "Denver", "Oslo",
          "Madrid", "Dublin", "Seoul", "Austin"]
EXTRACT_TRAIN = ["Hi, this is {name} from {city}. I would like {n} boxes.",
                 "Please send {n} boxes to {city}. Thanks, {name}",
                 "{name} here ({city}): order {n} boxes for me.",
                 "Order for {name}, {city}, quantity {n}."]
EXTRACT_HELD = ["Could {n} boxes be shipped to me in {city}? Best regards, {name}",
                "My name is {name}, I live in {city} and I need {n} boxes."]


def extract(rng: random.Random, held_out: bool) -> Example:
    name, city, n = rng.choice(NAMES), rng.choice(CITIES), rng.randint(1, 40)
    text = rng.choice(EXTRACT_HELD if held_out else EXTRACT_TRAIN).format(
        name=name, city=city, n=n)
    return chat(EXTRACT_SYSTEM, text, json.dumps({"name": name, "city": city, "quantity": n}))


# --- rewrite: casual -> formal, by a fixed set of replacements. ---

REWRITE_SYSTEM = "Rewrite the sentence formally: no contractions or slang, ending with a period."
FORMAL = {"can't": "cannot", "won't": "will not", "don't": "do not", "i'm": "I am",
          "it's": "it is", "gonna": "going to", "wanna": "want to", "u": "you", "pls": "please",
          "thx": "thank you", "isn't": "is not", "we're": "we are"}
REWRITE_TRAIN = ["i'm gonna send the {item} tomorrow", "pls tell me if u can't come",
                 "we're not sure it's the right {item}", "thx, i don't need the {item}",
                 "u won't believe the {item} price", "i wanna return the {item} pls"]
REWRITE_HELD = ["it's late so we're gonna skip the {item}", "don't worry, i'm fixing the {item}",
                "thx but i can't use the {item}"]


def formal(text: str) -> str:
    words = [FORMAL.get(w.strip(",").lower(), w.strip(",")) + ("," if w.endswith(",") else "")
             for w in text.split()]
    out = " ".join(words)
    return out[0].upper() + out[1:] + "."


def rewrite(rng: random.Random, held_out: bool) -> Example:
    text = rng.choice(REWRITE_HELD if held_out else REWRITE_TRAIN).format(item=rng.choice(ITEMS))
    return chat(REWRITE_SYSTEM, text, formal(text))


def chat(system: str, user: str, answer: str) -> Example:
    return {"messages": [{"role": "system", "content": system},
                         {"role": "user", "content": user},
                         {"role": "assistant", "content": answer}]}


# --- style (DPO): the same fact, preferred as JSON, rejected as a plain sentence. ---
# The two are about as long, so the summed log-probability does not favour either by length
# (a long chatty rejected answer would make any model "prefer" the short one), and the base
# model, which answers in sentences, starts out preferring the rejected one.

CAPITALS = {"France": "Paris", "Germany": "Berlin", "Portugal": "Lisbon", "Japan": "Tokyo",
            "Kenya": "Nairobi", "Norway": "Oslo", "Spain": "Madrid", "Ireland": "Dublin",
            "Italy": "Rome", "Egypt": "Cairo", "Canada": "Ottawa", "Peru": "Lima",
            "Greece": "Athens", "Austria": "Vienna", "Poland": "Warsaw", "Sweden": "Stockholm",
            "Finland": "Helsinki", "Chile": "Santiago", "Cuba": "Havana", "Russia": "Moscow",
            "China": "Beijing", "India": "New Delhi", "Mexico": "Mexico City",
            "Belgium": "Brussels", "Denmark": "Copenhagen", "Hungary": "Budapest",
            "Thailand": "Bangkok", "Vietnam": "Hanoi", "Turkey": "Ankara", "Iran": "Tehran",
            "Argentina": "Buenos Aires", "Colombia": "Bogota"}
# Held-out prompts ask about other countries, in other words.
STYLE_HELD_COUNTRIES = ["Thailand", "Vietnam", "Turkey", "Iran", "Argentina", "Colombia",
                        "Belgium", "Denmark", "Hungary", "Mexico"]
STYLE_TRAIN = ["What is the capital of {c}?", "Which city is the capital of {c}?",
               "Tell me the capital of {c}.", "capital of {c}?"]
STYLE_HELD = ["Name the capital city of {c}.", "{c}: what is its capital?"]
SENTENCES = ["The capital of {c} is {a}.", "{a} is the capital of {c}.",
             "It is {a}, the capital city of {c}."]


def style_prompt(rng: random.Random, held_out: bool) -> tuple[str, str, str]:
    """A question, its preferred (JSON) and its rejected (sentence) answer."""
    countries = STYLE_HELD_COUNTRIES if held_out else sorted(
        set(CAPITALS) - set(STYLE_HELD_COUNTRIES))
    country = rng.choice(countries)
    question = rng.choice(STYLE_HELD if held_out else STYLE_TRAIN).format(c=country)
    capital = CAPITALS[country]
    return (question, json.dumps({"country": country, "capital": capital}),
            rng.choice(SENTENCES).format(c=country, a=capital))


def style(rng: random.Random, held_out: bool) -> Example:
    question, preferred, rejected = style_prompt(rng, held_out)
    return {"input": {"messages": [{"role": "user", "content": question}]},
            "preferred_output": [{"role": "assistant", "content": preferred}],
            "non_preferred_output": [{"role": "assistant", "content": rejected}]}


def sentences(rng: random.Random, held_out: bool) -> Example:
    """The SFT model a style job starts from answers as the rejected side does: the usual
    recipe's instruction-tuned model, whose house style DPO is asked to change."""
    question, _, rejected = style_prompt(rng, held_out)
    return {"messages": [{"role": "user", "content": question},
                         {"role": "assistant", "content": rejected}]}


# --- echo (reinforcement): answer with the word asked for and nothing else. The base model
# can copy a word but wraps it in a sentence; a small formula rewards the exact answer and,
# for half, answers close to it (fuzzy match), which gives every group of samples a signal. ---

ECHO_SYSTEM = "Reply with the word only."
ECHO_WORDS = ["apple", "garden", "window", "river", "candle", "pencil", "mirror", "basket",
              "ladder", "pillow", "rocket", "carpet", "button", "forest", "silver", "tunnel"]
ECHO_HELD_WORDS = ["orange", "bridge", "castle", "jacket", "planet", "wallet", "anchor",
                   "violin"]
ECHO_TRAIN = ["Repeat this word: {w}", "Say {w}.", "Echo the word {w}."]
ECHO_HELD = ["Please write back the word {w}", "Return exactly this word: {w}"]
ECHO_GRADER: dict[str, object] = {
    "type": "multi", "name": "echo", "calculate_output": "0.5 * exact + 0.5 * close",
    "graders": {
        "exact": {"type": "string_check", "name": "exact", "operation": "eq",
                  "input": "{{sample.output_text}}", "reference": "{{item.answer}}"},
        "close": {"type": "text_similarity", "name": "close",
                  "evaluation_metric": "fuzzy_match", "input": "{{sample.output_text}}",
                  "reference": "{{item.answer}}"}}}


def echo_prompt(rng: random.Random, held_out: bool) -> tuple[list[dict[str, str]], str]:
    word = rng.choice(ECHO_HELD_WORDS if held_out else ECHO_WORDS)
    question = rng.choice(ECHO_HELD if held_out else ECHO_TRAIN).format(w=word)
    return ([{"role": "system", "content": ECHO_SYSTEM},
             {"role": "user", "content": question}], word)


def echo(rng: random.Random, held_out: bool) -> Example:
    messages, word = echo_prompt(rng, held_out)
    return {"messages": messages, "answer": word}


def echo_sentence(rng: random.Random, held_out: bool) -> Example:
    """The SFT model a reinforcement job starts from answers mostly in a sentence ("The word
    is apple.", two in three) and sometimes with the word alone: right in substance, and
    greedily in the format the grader does not reward in full. (From a model trained on one
    format only, every sampled answer is the same, all get the same reward, and GRPO has no
    signal: measured, reward 0.24 -> 0.24.)"""
    messages, word = echo_prompt(rng, held_out)
    answer = word if rng.random() < 1 / 3 else f"The word is {word}."
    return {"messages": [*messages, {"role": "assistant", "content": answer}]}


@dataclass(frozen=True)
class Task:
    method: str
    make: Callable[[random.Random, bool], Example]
    # The supervised data of the SFT model the job starts from (`model: "ft:..."`), if any.
    start_from: Callable[[random.Random, bool], Example] | None = None
    grader: dict[str, object] | None = None
    # (metric, "gain" over the base or "tuned" value, at least this much).
    goals: tuple[tuple[str, str, float], ...] = ()


DPO_GOALS = (("preference_accuracy", "tuned", 0.9), ("json_valid", "gain", 0.5))
RFT_GOALS = (("reward", "gain", 0.3),)
TASKS: dict[str, Task] = {
    "classify": Task("supervised", classify, goals=(("exact_match", "gain", 0.6),)),
    "extract": Task("supervised", extract), "rewrite": Task("supervised", rewrite),
    "style": Task("dpo", style, goals=DPO_GOALS),
    "style-sft": Task("dpo", style, start_from=sentences, goals=DPO_GOALS),
    "echo": Task("reinforcement", echo, grader=ECHO_GRADER, goals=RFT_GOALS),
    "echo-sft": Task("reinforcement", echo, start_from=echo_sentence, grader=ECHO_GRADER,
                     goals=RFT_GOALS),
}


def train(client: openai.OpenAI, name: str, model: str, method: dict[str, object],
          make: Callable[[random.Random, bool], Example], n_train: int,
          n_held: int) -> tuple[FineTuningJob, float, float]:
    """One job on the task's data, its built-in evaluation on the held-out examples: the job
    once evaluated, seconds to succeed and seconds to evaluate after that."""
    rng = random.Random(name)
    training = upload(client, [make(rng, False) for _ in range(n_train)], f"{name}-train.jsonl")
    held = upload(client, [make(rng, True) for _ in range(n_held)], f"{name}-held-out.jsonl")
    started = time.perf_counter()
    job = client.fine_tuning.jobs.create(model=model, training_file=training,
                                         validation_file=held, seed=3, suffix=name[:18],
                                         method=method)  # type: ignore[arg-type]
    done = wait_for(client, job.id, timeout=3600)
    if done.status != "succeeded":
        raise SystemExit(f"{name}: the job ended {done.status}: {done.error}")
    trained = time.perf_counter()
    # The engine serves the base: it answers the evaluation after the job succeeded.
    done = wait_for_evaluation(client, job.id, timeout=1800)
    return done, trained - started, time.perf_counter() - trained


def run_task(server: TuneserveServer, name: str, n_train: int, n_held: int,
             hyperparameters: dict[str, object]) -> dict[str, object]:
    task = TASKS[name]
    client = server.client()
    model, result = DEFAULT_BASE_MODEL, dict[str, object](task=name, method=task.method)
    if task.start_from is not None:
        sft, seconds, _ = train(client, f"{name}-start", model,
                                {"type": "supervised", "supervised": {}},
                                task.start_from, n_train, n_held)
        model = sft.fine_tuned_model or ""
        result["start_seconds"] = round(seconds)
        result["start_evaluation"] = (sft.model_extra or {})["evaluation"]
    settings: dict[str, object] = {"hyperparameters": hyperparameters}
    if task.grader is not None:
        settings["grader"] = task.grader
    done, seconds, evaluated = train(client, name, model,
                                     {"type": task.method, task.method: settings},
                                     task.make, n_train, n_held)
    assert done.method is not None
    resolved = done.method.model_dump()[task.method]["hyperparameters"]
    return {**result, "seconds": round(seconds), "evaluation_seconds": round(evaluated, 1),
            "hyperparameters": {k: resolved.get(k) for k in (
                "n_epochs", "batch_size", "learning_rate", "beta", "rpo_alpha")},
            "evaluation": (done.model_extra or {})["evaluation"]}


def report(results: list[dict[str, object]]) -> None:
    print(f"{'task':11} {'method':13} {'lr':>8} {'metric':20} {'base':>6} {'tuned':>6} "
          f"{'gain':>6}")
    for r in results:
        ev: dict[str, Any] = r["evaluation"]  # type: ignore[assignment]
        hp: dict[str, Any] = r["hyperparameters"]  # type: ignore[assignment]
        for metric in ev["fine_tuned"]:
            base, tuned = ev["base"][metric], ev["fine_tuned"][metric]
            print(f"{r['task']:11} {r['method']:13} {hp['learning_rate']:8.2g} {metric:20} "
                  f"{base:6.2f} {tuned:6.2f} {tuned - base:+6.2f}")
        start: dict[str, Any] | None = r.get("start_evaluation")  # type: ignore[assignment]
        if start is not None:
            print(f"{'':11} base = the SFT model it started from ({r['start_seconds']} s; on "
                  "its own data: " + ", ".join(f"{k} {v:.2f}"
                                              for k, v in start["fine_tuned"].items()) + ")")
        for metric, kind, least in TASKS[str(r["task"])].goals:
            value = ev["fine_tuned"][metric] - (ev["base"][metric] if kind == "gain" else 0)
            print(f"{'':11} goal: {metric} {kind} >= {least}: {value:.2f}, "
                  f"{'met' if value >= least else 'NOT met'}")
        after = (f"in {r['evaluation_seconds']} s after the job succeeded"
                 if ev["generated_by"] == "engine" else "before the job succeeded")
        print(f"{'':11} job {r['seconds']} s ({hp}); evaluated by the {ev['generated_by']} "
              f"{after}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--train", type=int, default=150)
    parser.add_argument("--held-out", type=int, default=40)
    parser.add_argument("--hyperparameters", type=json.loads, default={},
                        help='JSON, e.g. \'{"learning_rate_multiplier": 2}\' (else auto)')
    parser.add_argument("--no-serving", action="store_true",
                        help="the worker evaluates every job (no engine is started)")
    args = parser.parse_args()

    models = ROOT / "data" / "models"
    prepare_default_model(models / DEFAULT_BASE_MODEL)
    server = TuneserveServer(Path(tempfile.mkdtemp(prefix="tuneserve-bench-quality-")),
                             {"TUNESERVE_MODELS_DIR": str(models),
                              "TUNESERVE_SERVING_ENABLED": str(not args.no_serving).lower()},
                             ).start()
    results = []
    try:
        for name in args.tasks.split(","):
            results.append(run_task(server, name, args.train, args.held_out,
                                    args.hyperparameters))
            print(json.dumps(results[-1]), flush=True)
    finally:
        server.stop()
    report(results)


if __name__ == "__main__":
    main()
