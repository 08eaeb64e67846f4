"""Signs one request with Huawei Cloud's own Python SDK core, as its
clients sign every call (SDK-HMAC-SHA256), and prints what to send.

stdin:  {"key", "secret", "method", "host", "path",
         "query": [[name, value], ...], "headers": {name: value}, "body": text}
stdout: {"uri": path and canonical query, "headers": {name: value}}
"""

import json
import sys

from huaweicloudsdkcore.sdk_request import SdkRequest
from huaweicloudsdkcore.signer.signer import Signer


class Credentials:
    def __init__(self, ak, sk):
        self.ak = ak
        self.sk = sk


def main():
    spec = json.load(sys.stdin)
    request = SdkRequest(
        method=spec["method"],
        schema="http",
        host=spec["host"],
        resource_path=spec["path"],
        query_params=[tuple(pair) for pair in spec.get("query", [])],
        header_params=dict(spec.get("headers", {})),
        body=spec.get("body", ""),
    )
    signed = Signer(Credentials(spec["key"], spec["secret"])).sign(request)
    json.dump({"uri": signed.uri, "headers": signed.header_params}, sys.stdout)


main()
