"""Bytes a text in the server's answer, default model and readout: base64, JSON floats, and a shorter prefix.

    python benchmarks/response_size.py [--texts 16]

Runs the app in this process (FastAPI's test client, the default model loaded), posts one request
of short reviews in each form and prints the response body's size divided by the number of texts.
"""

from __future__ import annotations

import argparse
import time

from fastapi.testclient import TestClient

from inbedder.serving import ServerSettings, create_app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--texts", type=int, default=16)
    args = parser.parse_args()
    texts = [f"Review {i}: the lamp is great" for i in range(args.texts)]
    asked = {"input": texts, "instruction": "Is the reviewer satisfied?"}
    forms = {
        "base64": {"encoding_format": "base64"},
        "float (JSON numbers)": {"encoding_format": "float"},
        "base64, dimensions 256": {"encoding_format": "base64", "dimensions": 256},
    }
    with TestClient(create_app(ServerSettings())) as client:
        while client.get("/health").status_code != 200:
            time.sleep(0.5)
        print("| form | bytes a text |\n|---|---|")
        for name, extra in forms.items():
            response = client.post("/v1/embeddings", json=asked | extra)
            response.raise_for_status()
            print(f"| {name} | {len(response.content) / len(texts):,.0f} |")


if __name__ == "__main__":
    main()
