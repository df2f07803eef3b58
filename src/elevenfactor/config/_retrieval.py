"""The project file's ``retrieval:``: Retrieval indexes: where they live and how they are built and
searched.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from elevenfactor.config._models import _Strict

__all__ = ["IndexConfig", "RetrievalConfig"]


class IndexConfig(_Strict):
    """A retrieval index: the folder it is built from and how its documents are chunked and
    embedded. ``elevenfactor index build NAME`` builds it; a rebuild re-embeds only the
    documents that changed."""

    source: str = Field(
        description="Folder of documents (Markdown, text, HTML, PDF), relative to the project "
        "file's folder."
    )
    embedder: str = Field(
        default="local", description="Embedding model, by its name under `embeddings:`."
    )
    chunk_tokens: int = Field(
        default=200,
        ge=16,
        le=8192,
        description="Target chunk size in tokens of the embedder's tokenizer (heading path "
        "included).",
    )
    overlap_tokens: int = Field(
        default=40, ge=0, description="Tokens each chunk repeats from the one before."
    )
    max_document_bytes: int = Field(
        default=10 * 1024 * 1024,
        gt=0,
        description="Larger files are refused (skipped with a warning, or fail a --strict build).",
    )
    exclude: list[str] = Field(
        default_factory=list,
        description="Shell-style patterns of files to leave out, matched against their path "
        "relative to the source folder (e.g. 'drafts/*'). Hidden files are always left out.",
    )
    batch_size: int = Field(
        default=64, ge=1, le=4096, description="Chunks embedded per call of the embedder."
    )

    @model_validator(mode="after")
    def _overlap(self) -> IndexConfig:
        if self.overlap_tokens >= self.chunk_tokens // 2:
            raise ValueError("overlap_tokens must be under half of chunk_tokens")
        return self


class RetrievalConfig(_Strict):
    """Retrieval indexes: where they live and how they are built and searched.

    Where the indexes are stored is a deployment setting (`ELEVENFACTOR_RETRIEVAL_URL`); what
    they hold is declared here:

    ```yaml
    retrieval:
      indexes:
        docs: {source: docs, embedder: local, chunk_tokens: 200, overlap_tokens: 40}
    ```
    """

    indexes: dict[str, IndexConfig] = Field(
        default_factory=dict, description="Named indexes, built by `elevenfactor index build`."
    )
    keep_versions: int = Field(
        default=2,
        ge=1,
        le=100,
        description="Complete versions kept per index (the active one included); older ones are"
        " deleted when a new version is published.",
    )
