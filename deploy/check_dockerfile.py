#!/usr/bin/env python3
"""Checks the Dockerfile's promises without a Docker engine (none exists where CI runs): a
multi-stage build, a locked release build, a non-root runtime user, the gRPC health check and
the two ports. A real `docker build` is the operator's first step."""

import pathlib
import re
import sys

text = (pathlib.Path(__file__).resolve().parent.parent / "Dockerfile").read_text()
lines = [l.strip() for l in text.splitlines() if l.strip() and not l.strip().startswith("#")]
problems = []
if len([l for l in lines if l.startswith("FROM ")]) < 2:
    problems.append("not a multi-stage build")
if "cargo build --release --locked" not in text:
    problems.append("the build is not a locked release build")
users = [l.split()[1] for l in lines if l.startswith("USER ")]
if not users or users[-1].split(":")[0] in ("0", "root"):
    problems.append("the runtime user is root")
if not re.search(r'HEALTHCHECK [^\n]*\\\n\s*CMD \[[^]]*"health"', text):
    problems.append("no gRPC health check")
if not re.search(r"EXPOSE .*50051.*8080.*9464", text):
    problems.append("gRPC, HTTP and metrics ports not exposed")
if problems:
    sys.exit("Dockerfile: " + "; ".join(problems))
print("Dockerfile: multi-stage, locked release build, non-root user, gRPC health check, ports")
