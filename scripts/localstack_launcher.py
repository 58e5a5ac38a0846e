"""Start LocalStack core 2026.3.0 (S3 and SQS) for the tests, without Docker.

Run with the LocalStack venv's python; scripts/test sets the environment
(GATEWAY_LISTEN, SERVICES=s3,sqs, FILESYSTEM_ROOT, ...). Before handing over to
the runtime's main this launcher:

- points the S3 object store, hard-wired to one folder under the system temp
  directory, at a folder of this instance (argument 1), so parallel servers do
  not share objects;
- patches two listing bugs of that release (the last open-source one, so no
  upstream fix will come) that break tests with non-ASCII keys:
  1. continuation tokens are base64 of the UTF-8 key but decoded as ASCII:
     paging past a non-ASCII key answers HTTP 500;
  2. with EncodingType=url (sent by SDKs by default) StartAfter, Marker,
     ContinuationToken and KeyMarker are compared with URL-encoded keys, so
     order and start points are wrong for non-ASCII keys. The patch lists
     unencoded and URL-encodes the response's keys, prefixes and markers
     itself (ListObjects, ListObjectsV2, ListObjectVersions,
     ListMultipartUploads; the last also returned its keys unencoded).
- ListObjectsV2 with a Delimiter and a StartAfter inside a common prefix
  (`a/b` in `a/`) returned that prefix again; S3, like LocalStack's own
  ListObjects with Marker, returns only entries after StartAfter.
"""

import base64
import functools
import os
import sys
from urllib import parse as urlparse


def _patch_s3() -> None:
    from localstack.services.s3 import provider

    provider.DEFAULT_S3_TMP_DIR = sys.argv[1]

    def decode_continuation_token(value):
        if value is None:
            return ""
        return base64.b64decode(value, altchars=b"._").decode("utf-8")

    provider.decode_continuation_token = decode_continuation_token

    def quote(value):
        # The same encoding LocalStack applies to keys (urllib's default).
        return urlparse.quote(value) if value else value

    def encode_fields(response, fields):
        for field in fields:
            if response.get(field):
                response[field] = quote(response[field])

    def encode_list(response, list_name, field):
        for entry in response.get(list_name) or []:
            if entry.get(field):
                entry[field] = quote(entry[field])

    def listing(original, markers, lists):
        @functools.wraps(original)
        def wrapper(self, context, bucket, *args, encoding_type=None, **kwargs):
            response = original(self, context, bucket, *args, encoding_type=None, **kwargs)
            if encoding_type:
                encode_fields(response, ("Prefix", "Delimiter") + markers)
                for list_name, field in lists + (("CommonPrefixes", "Prefix"),):
                    encode_list(response, list_name, field)
                response["EncodingType"] = encoding_type
            return response

        return wrapper

    def skip_prefix_of_start_after(original):
        @functools.wraps(original)
        def wrapper(self, context, bucket, *args, **kwargs):
            prefix = kwargs.get("prefix") or ""
            delimiter = kwargs.get("delimiter")
            start_after = kwargs.get("start_after")
            if delimiter and start_after and not kwargs.get("continuation_token"):
                rest = start_after[len(prefix) :] if start_after.startswith(prefix) else ""
                if delimiter in rest:
                    # Start after every key of the common prefix holding start_after.
                    common = prefix + rest.partition(delimiter)[0] + delimiter
                    kwargs["start_after"] = common + "\U0010ffff"
                    response = original(self, context, bucket, *args, **kwargs)
                    response["StartAfter"] = start_after
                    return response
            return original(self, context, bucket, *args, **kwargs)

        return wrapper

    cls = provider.S3Provider
    cls.list_objects = listing(cls.list_objects, ("Marker", "NextMarker"), (("Contents", "Key"),))
    cls.list_objects_v2 = listing(
        skip_prefix_of_start_after(cls.list_objects_v2), ("StartAfter",), (("Contents", "Key"),)
    )
    cls.list_multipart_uploads = listing(
        cls.list_multipart_uploads,
        ("KeyMarker", "NextKeyMarker"),
        (("Uploads", "Key"),),
    )
    cls.list_object_versions = listing(
        cls.list_object_versions,
        ("KeyMarker", "NextKeyMarker"),
        (("Versions", "Key"), ("DeleteMarkers", "Key")),
    )


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: localstack_launcher.py S3_STORAGE_DIR")
    os.makedirs(sys.argv[1], exist_ok=True)
    _patch_s3()
    from localstack.runtime.main import main as runtime_main

    runtime_main()


if __name__ == "__main__":
    main()
