"""soap.edge.SoapSite over real HTTP: POST bodies are not parsed as forms, no access log by default."""

from __future__ import annotations

import urllib.request

import pytest
from twisted.web.resource import Resource

from reactor_support import serve
from soap.edge import SoapHttpRequest, SoapSite


class Recorder(Resource):
    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.seen: list = []

    def render_POST(self, request):
        self.seen.append((type(request), dict(request.args), request.content.read()))
        return b"ok"


def post(url: str, body: bytes, content_type: str) -> bytes:
    req = urllib.request.Request(url, data=body, headers={"Content-Type": content_type}, method="POST")
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.read()


@pytest.mark.parametrize("access_log", [False, True])
def test_post_body_is_left_alone_and_access_log_is_opt_in(access_log):
    logged: list = []

    def formatter(timestamp, request):
        logged.append(request.uri)
        return "line"

    resource = Recorder()
    site = SoapSite(resource, access_log=access_log, logFormatter=formatter)
    with serve(site) as url:
        assert post(url + "/x?wsdl=1", b"a=b&c=d", "application/x-www-form-urlencoded") == b"ok"
    ((request_type, args, body),) = resource.seen
    assert request_type is SoapHttpRequest
    assert args == {b"wsdl": [b"1"]}  # the query string is parsed, the body is not a form
    assert body == b"a=b&c=d"
    assert logged == ([b"/x?wsdl=1"] if access_log else [])
