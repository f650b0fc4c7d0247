"""Does fine-tuning with everything `auto` work? Three small tasks made here, each trained
through the API (`n_epochs: 3`, the rest `auto`) on the default base model, and scored by the
job's own built-in evaluation on held-out examples whose phrasings never appear in training:

1. classify: a customer message into one of four labels, answered as JSON;
2. extract: a name, a city and a quantity from an order message, into JSON;
3. rewrite: a casual sentence into a formal one (contractions and slang spelled out).

Goal: at least +0.6 exact match on `classify` with the default CPU model, a visible gain on
the others. Usage: `python bench/quality.py [--tasks classify,extract,rewrite]
[--train 150] [--held-out 40] [--learning-rate-multiplier X]` (X instead of `auto`).
"""

import argparse
import json
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

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


TASKS: dict[str, Callable[[random.Random, bool], Example]] = {
    "classify": classify, "extract": extract, "rewrite": rewrite}


def run_task(server: TuneserveServer, name: str, n_train: int, n_held: int,
             multiplier: float | None) -> dict[str, object]:
    rng = random.Random(name)
    make = TASKS[name]
    client = server.client()
    training = upload(client, [make(rng, False) for _ in range(n_train)], f"{name}-train.jsonl")
    held = upload(client, [make(rng, True) for _ in range(n_held)], f"{name}-held-out.jsonl")
    hyperparameters: dict[str, object] = {"n_epochs": 3}
    if multiplier is not None:
        hyperparameters["learning_rate_multiplier"] = multiplier
    started = time.perf_counter()
    job = client.fine_tuning.jobs.create(
        model=DEFAULT_BASE_MODEL, training_file=training, validation_file=held, seed=3,
        suffix=name, method={"type": "supervised",
                             "supervised": {"hyperparameters": hyperparameters}})
    done = wait_for(client, job.id, timeout=3600)
    if done.status != "succeeded":
        raise SystemExit(f"{name}: the job ended {done.status}: {done.error}")
    trained = time.perf_counter()
    # The engine serves the base: it answers the evaluation after the job succeeded.
    done = wait_for_evaluation(client, job.id, timeout=1800)
    resolved = done.method.model_dump()["supervised"]["hyperparameters"]
    return {"task": name, "seconds": round(trained - started),
            "evaluation_seconds": round(time.perf_counter() - trained, 1),
            "learning_rate": resolved["learning_rate"], "batch_size": resolved["batch_size"],
            "evaluation": (done.model_extra or {})["evaluation"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--train", type=int, default=150)
    parser.add_argument("--held-out", type=int, default=40)
    parser.add_argument("--learning-rate-multiplier", type=float, default=None)
    args = parser.parse_args()

    models = ROOT / "data" / "models"
    prepare_default_model(models / DEFAULT_BASE_MODEL)
    server = TuneserveServer(Path(tempfile.mkdtemp(prefix="tuneserve-bench-quality-")),
                             {"TUNESERVE_MODELS_DIR": str(models),
                              "TUNESERVE_SERVING_ENABLED": "true"}).start()
    try:
        results = [run_task(server, name, args.train, args.held_out,
                            args.learning_rate_multiplier) for name in args.tasks.split(",")]
    finally:
        server.stop()
    print(f"{'task':10} {'lr':>8} {'grader':16} {'base':>6} {'tuned':>6} {'gain':>6}")
    for r in results:
        ev = r["evaluation"]
        for grader in ev["fine_tuned"]:
            base, tuned = ev["base"][grader], ev["fine_tuned"][grader]
            print(f"{r['task']:10} {r['learning_rate']:8.2g} {grader:16} {base:6.2f} "
                  f"{tuned:6.2f} {tuned - base:+6.2f}")
        after = (f"in {r['evaluation_seconds']} s after the job succeeded"
                 if ev["generated_by"] == "engine" else "before the job succeeded")
        print(f"{'':10} job {r['seconds']} s; evaluated by the {ev['generated_by']} {after}")
        for ckpt in ev["checkpoints"]:
            print(f"{'':10} {'':8} {'step ' + str(ckpt['step_number']):16} "
                  f"{'':6} {ckpt['exact_match']:6.2f}  (exact match, checkpoint)")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
