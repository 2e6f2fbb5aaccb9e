"""AWS API calls the pinned moto lacks, added to moto_server as AWS documents them.

Loaded by a .pth file that `scripts/moto start` puts in the venv; active only in a process
started with TOLLBRIDGE_MOTO_ADDITIONS=1 (the server `scripts/moto start` runs).

- apigatewayv2 GetAuthorizers (GET /v2/apis/{apiId}/authorizers): the API's authorizers as
  `{"items": [...]}`, in one page (AWS pages by `maxResults`/`nextToken`; the provider follows
  `nextToken`, absent here).
"""

import json
import os

if os.environ.get("TOLLBRIDGE_MOTO_ADDITIONS") == "1":
    from moto.apigatewayv2.responses import ApiGatewayV2Response

    def get_authorizers(self):
        api_id = self.path.split("/")[-2]
        api = self.apigatewayv2_backend.get_api(api_id)
        items = [authorizer.to_json() for authorizer in api.authorizers.values()]
        return 200, {}, json.dumps({"items": items})

    if not hasattr(ApiGatewayV2Response, "get_authorizers"):
        ApiGatewayV2Response.get_authorizers = get_authorizers
