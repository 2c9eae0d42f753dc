"""The integrations run the real libraries on the tiny model: what they store is what inbedder computes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from inbedder.options import EncodeOptions

TEXTS = ["The lamp broke after a week.", "Shipping took a month.", "Great lamp, bright light.", "The box arrived torn."]
QUESTION = "What does the customer complain about?"


def unit(rows):
    rows = np.asarray(rows, dtype=np.float64)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_langchain_embeddings_ask_the_question_of_documents_and_queries(tiny):
    from langchain_core.vectorstores import InMemoryVectorStore

    from inbedder.integrations.langchain import InBedderEmbeddings

    embeddings = InBedderEmbeddings(tiny, instruction=QUESTION)
    documents = embeddings.embed_documents(TEXTS)
    assert len(documents) == len(TEXTS) and all(isinstance(x, float) for x in documents[0])
    np.testing.assert_allclose(documents, unit(tiny.encode(TEXTS, QUESTION)), atol=1e-5)
    query = embeddings.embed_query("It stopped working.")
    np.testing.assert_allclose(query, unit(tiny.encode(["It stopped working."], QUESTION))[0], atol=1e-5)
    other = InBedderEmbeddings(tiny, instruction=QUESTION, query_instruction="Is it about a lamp?")
    np.testing.assert_allclose(
        other.embed_query("It stopped working."),
        unit(tiny.encode(["It stopped working."], "Is it about a lamp?"))[0],
        atol=1e-5,
    )
    assert embeddings.embed_documents([]) == []

    store = InMemoryVectorStore.from_texts(TEXTS, embeddings)
    (found,) = store.similarity_search("It stopped working.", k=1)
    assert found.page_content == TEXTS[int(np.argmax(np.asarray(documents) @ np.asarray(query)))]


def test_langchain_embeddings_take_any_embedder_and_its_options(tiny):
    from inbedder.generic import Precomputed
    from inbedder.integrations.langchain import InBedderEmbeddings

    given = np.eye(4, dtype=np.float32) * 3
    embeddings = InBedderEmbeddings(Precomputed(TEXTS, [QUESTION], [given]), instruction=QUESTION)
    np.testing.assert_allclose(embeddings.embed_documents(TEXTS), np.eye(4))  # unit length, as stores expect
    read = InBedderEmbeddings(tiny, QUESTION, options=EncodeOptions(readout="avg_ppt"))
    np.testing.assert_allclose(
        read.embed_documents(TEXTS[:2]), unit(tiny.encode(TEXTS[:2], QUESTION, readout="avg_ppt")), atol=1e-5
    )
    with pytest.raises(TypeError, match="model must be an Embedder"):
        InBedderEmbeddings(object())


def test_a_missing_library_names_the_extra(monkeypatch):
    import importlib
    import sys

    monkeypatch.delitem(sys.modules, "inbedder.integrations.langchain", raising=False)
    monkeypatch.setitem(sys.modules, "langchain_core", None)  # as if not installed
    with pytest.raises(
        ImportError, match=r"needs the 'langchain_core' package.*pip install 'inbedder\[integrations\]'"
    ):
        importlib.import_module("inbedder.integrations.langchain")


def test_bertopic_clusters_with_the_question_and_transforms_new_documents(tiny):
    pytest.importorskip("bertopic", reason="make test-integrations installs it (pip install 'inbedder[bertopic]')")
    from bertopic import BERTopic
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA

    from inbedder.integrations.bertopic import InBedderBackend

    docs = [
        f"{thing} number {i}: it {fault}"
        for i in range(6)
        for thing, fault in (("lamp", "broke"), ("box", "came late"))
    ]
    backend = InBedderBackend(tiny, instruction=QUESTION)
    topics = BERTopic(embedding_model=backend, umap_model=PCA(2), hdbscan_model=KMeans(2, n_init=1, random_state=0))
    assigned, _ = topics.fit_transform(docs)
    assert len(assigned) == len(docs) and set(assigned) == {0, 1}
    np.testing.assert_allclose(backend.embed(docs[:3]), tiny.encode(docs[:3], QUESTION), atol=1e-5)
    again, _ = topics.transform(docs[:4])  # new documents are asked the same question (no precomputed vectors)
    assert list(again) == list(assigned[:4])
    found, similarity = topics.find_topics("broke", top_n=1)
    assert len(found) == 1 and -1.0 <= similarity[0] <= 1.0


def test_llama_index_embedding_asks_the_question(tiny):
    pytest.importorskip(
        "llama_index.core", reason="make test-integrations installs it (pip install 'inbedder[llama_index]')"
    )
    from llama_index.core import Document, VectorStoreIndex

    from inbedder.integrations.llama_index import InBedderEmbedding

    embedding = InBedderEmbedding(tiny, instruction=QUESTION, query_instruction="Is it about a lamp?")
    np.testing.assert_allclose(
        embedding.get_text_embedding(TEXTS[0]), unit(tiny.encode([TEXTS[0]], QUESTION))[0], atol=1e-5
    )
    np.testing.assert_allclose(embedding.get_text_embedding_batch(TEXTS), unit(tiny.encode(TEXTS, QUESTION)), atol=1e-5)
    query = embedding.get_query_embedding("It stopped working.")
    np.testing.assert_allclose(query, unit(tiny.encode(["It stopped working."], "Is it about a lamp?"))[0], atol=1e-5)
    index = VectorStoreIndex.from_documents([Document(text=t) for t in TEXTS], embed_model=embedding)
    (found,) = index.as_retriever(similarity_top_k=1).retrieve("It stopped working.")
    documents = unit(tiny.encode(TEXTS, QUESTION))
    assert found.node.get_content() == TEXTS[int(np.argmax(documents @ np.asarray(query)))]


def test_chroma_collection_adds_and_queries_with_the_question(tiny):
    pytest.importorskip("chromadb", reason="make test-integrations installs it (pip install 'inbedder[chroma]')")
    import chromadb

    from inbedder.integrations.chroma import InBedderEmbeddingFunction

    embed = InBedderEmbeddingFunction(tiny, instruction=QUESTION)
    np.testing.assert_allclose(np.asarray(embed(TEXTS)), unit(tiny.encode(TEXTS, QUESTION)), atol=1e-5)
    collection = chromadb.EphemeralClient().create_collection("test-tickets", embedding_function=embed)
    collection.add(ids=[str(i) for i in range(len(TEXTS))], documents=TEXTS)
    found = collection.query(query_texts=["It stopped working."], n_results=1)
    documents, query = unit(tiny.encode(TEXTS, QUESTION)), unit(tiny.encode(["It stopped working."], QUESTION))[0]
    assert found["documents"][0] == [TEXTS[int(np.argmax(documents @ query))]]
    assert embed.get_config() == {"model": tiny.name, "instruction": QUESTION, "query_instruction": QUESTION}


def test_mteb_evaluates_an_inbedder_on_a_local_clustering_task(tiny, tmp_path):
    pytest.importorskip("mteb", reason="make test-integrations installs it (pip install 'inbedder[mteb]')")
    import mteb
    from sklearn.cluster import MiniBatchKMeans
    from sklearn.metrics import v_measure_score

    from inbedder.integrations.mteb import InBedderEncoder, clustering_task

    faults = (("lamp", "broke"), ("box", "was late"))
    docs = [f"The {thing} {fault} on day {i}." for i in range(8) for thing, fault in faults]
    labels = ["lamp", "box"] * 8
    task = clustering_task("LampsAndBoxes", docs, labels, samples=1)
    model = InBedderEncoder(tiny, instructions={"LampsAndBoxes": QUESTION}, instruction="Is it about a lamp?")
    assert model.question(task.metadata, None) == QUESTION  # the task's name comes before the fallback
    result = mteb.evaluate(model, task, cache=None, show_progress_bar=False)
    (task_result,) = result.task_results
    score = task_result.get_score()

    # the same computation by hand: mteb resamples all 16 texts with replacement (seeded) and runs k-means
    import random

    vectors = unit(tiny.encode(docs, QUESTION)).astype(np.float32)
    picks = random.Random(task.seed).choices(range(len(docs)), k=len(docs))
    kmeans = MiniBatchKMeans(n_clusters=2, batch_size=512, n_init=1, random_state=task.seed)
    expected = v_measure_score(np.asarray(labels)[picks], kmeans.fit_predict(vectors[picks]))
    assert score == pytest.approx(expected, abs=1e-6)

    assert model.mteb_model_meta.name == f"inbedder/{Path(tiny.name).name}"  # mteb names are org/model
    assert model.mteb_model_meta.revision == tiny.fingerprint[:12]
    other = InBedderEncoder(tiny, instruction="Is it about a lamp?")
    assert other.mteb_model_meta.experiment_kwargs != model.mteb_model_meta.experiment_kwargs  # apart in mteb's cache
    with pytest.raises(ValueError, match="'Few': 2 texts but 1 labels"):
        clustering_task("Few", docs[:2], labels[:1])


@pytest.mark.slow
def test_the_readme_integration_blocks_run_as_written(monkeypatch):
    from test_readme import LIBRARIES, README, run_blocks, runnable_blocks

    for library in LIBRARIES:
        pytest.importorskip(library, reason="make test-integrations installs it")
    monkeypatch.chdir(README.parent)  # the blocks read examples/reviews-240.csv
    namespace: dict = {}
    run_blocks(runnable_blocks("integrations"), namespace)
    assert len(namespace["assigned"]) == 200 and 0.0 <= namespace["result"].task_results[0].get_score() <= 1.0
