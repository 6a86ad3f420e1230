#!/usr/bin/env python3
"""Generate the redactor benchmark input: SECRETS_DIR with 100 secret files and a
mixed log of SIZE bytes (timestamps, docker/abra-like lines, JSON, base64 blobs,
progress bars with \\r, a little binary), with a secret in about 1 line in 500."""
import base64, json, os, random, sys

secrets_dir, log_path, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
rng = random.Random(42)
alpha = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
os.makedirs(secrets_dir, exist_ok=True)
secrets = []
for i in range(100):
    n = rng.randint(12, 48)
    v = "".join(rng.choice(alpha + "-_.:/+=") for _ in range(n))
    secrets.append(v)
    with open(os.path.join(secrets_dir, f"secret_{i:03}"), "w") as f:
        f.write(v + "\n")
words = ["deploy", "service", "container", "network", "volume", "healthcheck", "starting",
         "traefik", "postgres", "ready", "GET", "POST", "/api/v1/status", "200", "404", "ok",
         "coop-cloud", "recipe", "upgrade", "backup", "restore", "swarm", "task", "running"]

def line(i):
    k = rng.random()
    ts = f"2026-11-25T12:{i // 60 % 60:02}:{i % 60:02}.{i % 1000:03}Z"
    if k < 0.002:
        return f"{ts} env SECRET={rng.choice(secrets)} leaked\n"
    if k < 0.003:
        return f"{ts} b64 {base64.b64encode(rng.choice(secrets).encode()).decode()}\n"
    if k < 0.15:
        return ts + " " + json.dumps({"level": "info", "msg": " ".join(rng.choices(words, k=6)),
                                      "id": rng.getrandbits(64)}) + "\n"
    if k < 0.20:
        return ts + " blob " + base64.b64encode(rng.randbytes(rng.randint(20, 90))).decode() + "\n"
    if k < 0.22:
        return "".join(f"\rpulling {p}%" for p in range(0, 101, 20)) + "\n"
    if k < 0.225:
        return rng.randbytes(rng.randint(1, 60)).hex() + "\x00\xff\n"
    return ts + " " + " ".join(rng.choices(words, k=rng.randint(4, 14))) + "\n"

# Build a 4 MiB block and repeat it: generating 256 MiB line by line takes minutes.
block = []
n = 0
i = 0
while n < 4 << 20:
    l = line(i).encode("latin-1", "replace")
    block.append(l)
    n += len(l)
    i += 1
block = b"".join(block)
with open(log_path, "wb") as f:
    left = size
    while left > 0:
        f.write(block[:left])
        left -= len(block)
