"""A loopback stand-in for the Hugging Face Hub endpoints ``huggingface_hub`` calls to create a
repo and commit regular files: ``POST /api/repos/create``, ``POST /api/validate-yaml``,
``POST /api/{type}s/{ns}/{name}/preupload/{rev}`` (every file answered ``uploadMode: regular``)
and ``POST /api/{type}s/{ns}/{name}/commit/{rev}`` (NDJSON: header, then base64 files). It keeps
what it received (``GET /_received``) and refuses requests without a bearer token.

Run it:  python -m factory.testing.hub --port 0   (prints its URL; use it as HF_ENDPOINT)
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import sys

import yaml
from aiohttp import web

from factory.testing import serve_forever


def make_app() -> web.Application:
    app = web.Application(client_max_size=1024 * 2**20)
    repos: dict[str, dict] = {}
    received: dict[str, dict] = {}        # repo → {path: bytes}
    tokens: set[str] = set()

    def authorised(request: web.Request) -> bool:
        auth = request.headers.get("authorization", "")
        if not auth.lower().startswith("bearer "):
            return False
        tokens.add(hashlib.sha256(auth[7:].encode()).hexdigest())    # only a hash: the stand-in keeps no secret
        return True

    def unauthorised() -> web.Response:
        return web.json_response({"error": "Invalid credentials in Authorization header"}, status=401)

    async def create(request: web.Request) -> web.Response:
        if not authorised(request):
            return unauthorised()
        body = await request.json()
        repo_id = f"{body.get('organization') or 'user'}/{body['name']}"
        typ = body.get("type", "model")
        if repo_id in repos:
            return web.json_response({"error": "You already created this dataset repo", "url": f"{request.url.origin()}/datasets/{repo_id}"}, status=409)
        private = bool(body.get("private")) or body.get("visibility") == "private"     # newer clients send visibility
        repos[repo_id] = {"type": typ, "private": private}
        received[repo_id] = {}
        prefix = "datasets/" if typ == "dataset" else ""
        return web.json_response({"url": f"{request.url.origin()}/{prefix}{repo_id}", "name": repo_id, "id": repo_id})

    async def validate_yaml(request: web.Request) -> web.Response:
        body = await request.json()
        content = body.get("content", "")
        parts = content.split("\n---\n", 1) if content.startswith("---\n") else None     # the card's front matter
        if not parts:
            return web.json_response({"errors": [], "warnings": [{"message": "empty or missing yaml metadata"}]})
        try:
            meta = yaml.safe_load(parts[0][4:])
        except yaml.YAMLError as e:
            return web.json_response({"errors": [{"message": f"Invalid YAML: {e}"}], "warnings": []}, status=400)
        if not isinstance(meta, dict):
            return web.json_response({"errors": [{"message": "metadata must be a mapping"}], "warnings": []}, status=400)
        return web.json_response({"errors": [], "warnings": []})

    def refused(request: web.Request) -> web.Response | None:
        """401 without a token, 404 for a repo that was not created; None when the call may go on."""
        if not authorised(request):
            return unauthorised()
        if repo_of(request) not in repos:
            return web.json_response({"error": "Repository not found"}, status=404)
        return None

    def repo_of(request: web.Request) -> str:
        return f"{request.match_info['ns']}/{request.match_info['name']}"

    async def preupload(request: web.Request) -> web.Response:
        if (refusal := refused(request)) is not None:
            return refusal
        body = await request.json()
        return web.json_response({"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": None}
                                            for f in body["files"]], "commitOid": "0" * 40})

    async def commit(request: web.Request) -> web.Response:
        if (refusal := refused(request)) is not None:
            return refusal
        repo_id = repo_of(request)
        raw = await request.read()
        lines = [json.loads(line) for line in raw.decode().splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            return web.json_response({"error": "first line must be the commit header"}, status=400)
        for item in lines[1:]:
            if item["key"] == "file":
                v = item["value"]
                received[repo_id][v["path"]] = base64.b64decode(v["content"]) if v.get("encoding") == "base64" else v["content"].encode()
            elif item["key"] in ("lfsFile",):
                return web.json_response({"error": "this stand-in takes regular files only"}, status=400)
        oid = hashlib.sha1(raw).hexdigest()
        return web.json_response({"success": True, "commitOid": oid, "commitUrl": f"{request.url.origin()}/datasets/{repo_id}/commit/{oid}",
                                  "pullRequestUrl": None, "hookOutput": ""})

    async def got(request: web.Request) -> web.Response:
        return web.json_response({repo: {"private": repos[repo]["private"], "type": repos[repo]["type"],
                                         "files": {p: base64.b64encode(b).decode() for p, b in files.items()}}
                                  for repo, files in received.items()} | {"_token_hashes": sorted(tokens)})

    app.router.add_post("/api/repos/create", create)
    app.router.add_post("/api/validate-yaml", validate_yaml)
    app.router.add_post("/api/{type}s/{ns}/{name}/preupload/{rev}", preupload)
    app.router.add_post("/api/{type}s/{ns}/{name}/commit/{rev}", commit)
    app.router.add_get("/_received", got)
    return app


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=0)
    serve_forever(make_app(), ap.parse_args(argv).port)


if __name__ == "__main__":
    sys.exit(main())
