#!/usr/bin/env python3
"""MongoDB stand-in for Mongo Pulse tests.

A small MongoDB wire-protocol server (OP_MSG, plus the legacy OP_QUERY handshake) whose
query, update and aggregation semantics come from mongomock. It adds what mongomock lacks
and the product uses: a replica-set primary `hello`, server-side cursors with `getMore`,
change streams with resume tokens (an in-memory oplog), unique indexes, TTL expiry,
time-series collection metadata and the `failCommand` fail point.

Usage: python3 tests/standin/standin.py [--host 127.0.0.1] [--port 0]
Prints exactly one line `LISTENING <host>:<port>` on stdout once it accepts connections;
everything else goes to stderr. See tests/standin/README.md.
"""

import argparse
import asyncio
import bisect
import copy
import datetime
import decimal
import itertools
import logging
import math
import os
import random
import re
import signal
import struct
import sys
import time
import traceback
import uuid

import bson
from bson import Binary, Int64, ObjectId, Regex, Timestamp
from bson.codec_options import CodecOptions, DatetimeConversion

import mongomock
import mongomock.aggregate as mm_agg
import mongomock.collection as mm_coll
import mongomock.filtering as mm_filter
import mongomock.helpers as mm_helpers
import mongomock.store as mm_store
from mongomock import DuplicateKeyError, OperationFailure, WriteError
from pymongo.errors import InvalidName

log = logging.getLogger("standin")

CODEC = CodecOptions(
    document_class=dict,
    tz_aware=False,
    datetime_conversion=DatetimeConversion.DATETIME_AUTO,
)

OP_REPLY = 1
OP_QUERY = 2004
OP_COMPRESSED = 2012
OP_MSG = 2013

MAX_BSON = 16 * 1024 * 1024
MAX_MESSAGE = 48_000_000
MAX_WRITE_BATCH = 100_000
SERVER_VERSION = "7.0.0"
MAX_WIRE_VERSION = 21  # MongoDB 7.0

CODE_NAMES = {
    1: "InternalError",
    2: "BadValue",
    9: "FailedToParse",
    11: "UserNotFound",
    18: "AuthenticationFailed",
    14: "TypeMismatch",
    26: "NamespaceNotFound",
    27: "IndexNotFound",
    40: "ConflictingUpdateOperators",
    43: "CursorNotFound",
    48: "NamespaceExists",
    50: "MaxTimeMSExpired",
    52: "DollarPrefixedFieldName",
    59: "CommandNotFound",
    66: "ImmutableField",
    67: "CannotCreateIndex",
    72: "InvalidOptions",
    73: "InvalidNamespace",
    85: "IndexOptionsConflict",
    86: "IndexKeySpecsConflict",
    89: "NetworkTimeout",
    91: "ShutdownInProgress",
    115: "CommandNotSupported",
    166: "CommandNotSupportedOnView",
    168: "InvalidPipelineOperator",
    189: "PrimarySteppedDown",
    237: "CursorKilled",
    238: "NotImplemented",
    260: "InvalidResumeToken",
    262: "ExceededTimeLimit",
    280: "ChangeStreamFatalError",
    286: "ChangeStreamHistoryLost",
    10107: "NotWritablePrimary",
    11000: "DuplicateKey",
    11600: "InterruptedAtShutdown",
    11602: "InterruptedDueToReplStateChange",
    13435: "NotPrimaryNoSecondaryOk",
    13436: "NotPrimaryOrSecondary",
    40324: "Location40324",
}


class CommandError(Exception):
    """An error reply: {ok: 0, errmsg, code, codeName[, errorLabels]}."""

    def __init__(self, code, msg, labels=None, extra=None):
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.labels = labels
        self.extra = extra or {}

    def to_doc(self):
        doc = {"ok": 0.0, "errmsg": self.msg, "code": self.code,
               "codeName": CODE_NAMES.get(self.code, "Location%d" % self.code)}
        if self.labels:
            doc["errorLabels"] = list(self.labels)
        doc.update(self.extra)
        return doc


class CloseConnection(Exception):
    """Raised by the failCommand fail point with closeConnection: true."""


class DupKey(DuplicateKeyError):
    """A duplicate key error with MongoDB's message and keyPattern/keyValue details."""

    def __init__(self, ns, index_name, key_pattern, key_value):
        msg = "E11000 duplicate key error collection: %s index: %s dup key: %s" % (
            ns, index_name, render_key(key_value))
        super().__init__(msg, 11000, {"keyPattern": key_pattern, "keyValue": key_value})
        self.msg = msg
        self.key_pattern = key_pattern
        self.key_value = key_value


def render_value(v):
    if isinstance(v, str):
        return '"%s"' % v.replace('"', '\\"')
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "null"
    if isinstance(v, ObjectId):
        return "ObjectId('%s')" % v
    if isinstance(v, datetime.datetime):
        return "new Date(%d)" % to_millis(v)
    if isinstance(v, dict):
        return render_key(v)
    if isinstance(v, list):
        return "[ " + ", ".join(render_value(x) for x in v) + " ]"
    return str(v)


def render_key(doc):
    return "{ " + ", ".join("%s: %s" % (k, render_value(v)) for k, v in doc.items()) + " }"


def to_millis(dt):
    if dt.tzinfo is not None:
        dt = dt.astimezone(datetime.timezone.utc).replace(tzinfo=None)
    return (dt - datetime.datetime(1970, 1, 1)) // datetime.timedelta(milliseconds=1)


def utcnow_ms():
    now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    return now.replace(microsecond=(now.microsecond // 1000) * 1000)


def strict_eq(a, b):
    """BSON-style equality: types and key order matter (1 != 1.0 != Int64(1) here)."""
    if isinstance(a, dict):
        if not isinstance(b, dict) or len(a) != len(b):
            return False
        for (ka, va), (kb, vb) in zip(a.items(), b.items()):
            if ka != kb or not strict_eq(va, vb):
                return False
        return True
    if isinstance(a, list):
        if not isinstance(b, list) or len(a) != len(b):
            return False
        return all(strict_eq(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def hashable_key(v):
    """Order- and type-sensitive hashable form of a value, for unique index keys."""
    if isinstance(v, dict):
        return ("d", tuple((k, hashable_key(x)) for k, x in v.items()))
    if isinstance(v, list):
        return ("l", tuple(hashable_key(x) for x in v))
    if isinstance(v, bool):
        return ("b", v)
    if isinstance(v, (int, float)):
        return ("n", v)  # numbers compare by value across int/long/double, as in MongoDB
    try:
        hash(v)
        return (type(v).__name__, v)
    except TypeError:
        return ("r", repr(v))


NO_KEY = object()
_SCALAR_ID_TYPES = (str, int, float, ObjectId, datetime.datetime, uuid.UUID, bytes, Binary,
                    Timestamp)


def id_store_key(v):
    """The key mongomock's CollectionStore uses for an _id value."""
    if isinstance(v, dict):
        return mm_helpers.hashdict(v)
    return v


def id_equality_key(filt):
    """If `filt` is exactly an `_id` equality, the store key to look up; else NO_KEY."""
    if not isinstance(filt, dict) or len(filt) != 1 or "_id" not in filt:
        return NO_KEY
    v = filt["_id"]
    if isinstance(v, dict):
        if len(v) == 1 and "$eq" in v:
            v = v["$eq"]
            if isinstance(v, dict):
                if any(k.startswith("$") for k in v):
                    return NO_KEY
                return mm_helpers.hashdict(v)
        elif v and not any(k.startswith("$") for k in v):
            return mm_helpers.hashdict(v)
        else:
            return NO_KEY
    if isinstance(v, bool) or not isinstance(v, _SCALAR_ID_TYPES):
        return NO_KEY
    if isinstance(v, float) and math.isnan(v):
        return NO_KEY
    return v


# ---------------------------------------------------------------------------------------
# mongomock patches
# ---------------------------------------------------------------------------------------

def _meta(store):
    m = getattr(store, "_standin_meta", None)
    if m is None:
        m = store._standin_meta = {
            "options": {},
            "uuid": Binary(uuid.uuid4().bytes, 4),
            "indexes": {},  # name -> index spec as listIndexes reports it
            "uniq": {},  # name -> {hashable key tuple -> set(store keys)}
        }
    return m


def _reset_meta(store):
    if hasattr(store, "_standin_meta"):
        del store._standin_meta


def _index_fields(spec):
    return list(spec["key"].items())


def index_key_of(doc, spec):
    """(indexed?, key tuple, key value doc) of `doc` for a unique index spec."""
    values = {}
    missing = 0
    for field, _ in _index_fields(spec):
        try:
            values[field] = mm_helpers.get_value_by_dot(doc, field)
        except (KeyError, IndexError, TypeError):
            values[field] = None
            missing += 1
    if spec.get("sparse") and missing == len(values):
        return False, None, None
    pfe = spec.get("partialFilterExpression")
    if pfe is not None and not mm_filter.filter_applies(pfe, doc):
        return False, None, None
    key = tuple(hashable_key(v) for v in values.values())
    return True, key, values


def _fast_ensure_uniques(self, new_data):
    """Replacement for mongomock's O(n)-per-write unique check: a lazily cleaned hash map.

    Called by mongomock (and by the stand-in) with `new_data` already in the store.
    """
    store = self._store
    meta = _meta(store)
    own = id_store_key(new_data.get("_id"))
    docs = store._documents
    for name, spec in meta["indexes"].items():
        if not spec.get("unique") or name == "_id_":
            continue
        indexed, key, values = index_key_of(new_data, spec)
        if not indexed:
            continue
        holders = meta["uniq"].setdefault(name, {}).setdefault(key, set())
        for other in list(holders):
            if other == own:
                continue
            odoc = docs.get(other)
            if odoc is None:
                holders.discard(other)
                continue
            o_indexed, o_key, _ = index_key_of(odoc, spec)
            if not o_indexed or o_key != key:
                holders.discard(other)
                continue
            raise DupKey("%s.%s" % (self.database.name, self.name), name,
                         dict(spec["key"]), values)
        holders.add(own)


def _id_lookup_keys(filt):
    """Store keys to look up when `filt` pins `_id` by equality, `$eq` or `$in`; else None."""
    if not isinstance(filt, dict) or "_id" not in filt:
        return None
    v = filt["_id"]
    if isinstance(v, dict) and len(v) == 1 and "$in" in v and isinstance(v["$in"], list):
        keys = []
        for x in v["$in"]:
            k = id_equality_key({"_id": x})
            if k is NO_KEY or isinstance(x, dict) and "$eq" in x:
                return None
            keys.append(k)
        return keys
    k = id_equality_key({"_id": v})
    return None if k is NO_KEY else [k]


def _fast_iter_documents(self, filter):
    """mongomock scans every document; serve `_id` lookups from the store's dict instead."""
    keys = _id_lookup_keys(filter)
    if keys is None:
        return _orig_iter_documents(self, filter)
    docs = self._store._documents
    try:
        if len(keys) == 1:
            found = [docs[keys[0]]] if keys[0] in docs else []
        else:
            seen = set()
            found = []
            for k in keys:
                if k not in seen and k in docs:
                    seen.add(k)
                    found.append(docs[k])
            # MongoDB answers through the _id index: in _id order.
            found.sort(key=lambda d: mm_filter.BsonComparable(d.get("_id")))
    except TypeError:
        return _orig_iter_documents(self, filter)
    if len(filter) > 1:
        found = [d for d in found if mm_filter.filter_applies(filter, d)]
    return iter(found)


_RANGE_OPS = {"$gte": lambda a, b: a >= b, "$gt": lambda a, b: a > b,
              "$lte": lambda a, b: a <= b, "$lt": lambda a, b: a < b}


def _date_range_prefilter(spec):
    """A test no document matching `spec` fails, or None: for each top-level field
    compared to dates only with $gte/$gt/$lte/$lt, a document whose field holds a
    date outside the range cannot match (the top level is an implicit $and).
    Any other value (missing, array, another type) is left for the $match to judge."""
    if not isinstance(spec, dict):
        return None
    ranges = []
    for field, cond in spec.items():
        if field.startswith("$") or "." in field or not isinstance(cond, dict) or not cond:
            continue
        if not all(op in _RANGE_OPS and isinstance(v, datetime.datetime) and v.tzinfo is None
                   for op, v in cond.items()):
            continue
        ranges.append((field, [(_RANGE_OPS[op], v) for op, v in cond.items()]))
    if not ranges:
        return None

    def keep(doc):
        for field, tests in ranges:
            v = doc.get(field)
            if type(v) is datetime.datetime and v.tzinfo is None and \
                    not all(test(v, bound) for test, bound in tests):
                return False
        return True
    return keep


def _is_number(v):
    return isinstance(v, (int, float, bson.Decimal128)) and not isinstance(v, bool)


def _num_result(a, b, res):
    if isinstance(res, int) and not isinstance(res, bool):
        if isinstance(a, Int64) or isinstance(b, Int64) or not (-2**31 <= res < 2**31):
            return Int64(res)
    return res


def _inc_updater(doc, field_name, value):
    if isinstance(doc, dict):
        if not _is_number(value):
            raise WriteError("Cannot increment with non-numeric argument: {%s: %r}"
                             % (field_name, value), 14)
        cur = doc.get(field_name, 0)
        if cur is None or not _is_number(cur):
            raise WriteError(
                "Cannot apply $inc to a value of non-numeric type. {_id: %r} has the field "
                "'%s' of non-numeric type %s" % (doc.get("_id"), field_name, type(cur).__name__),
                14)
        if field_name not in doc:
            doc[field_name] = value
        else:
            doc[field_name] = _num_result(cur, value, cur + value)


def _mul_updater(doc, field_name, value):
    if isinstance(doc, dict):
        if not _is_number(value):
            raise WriteError("Cannot multiply with non-numeric argument", 14)
        cur = doc.get(field_name, 0 * value)
        if not _is_number(cur):
            raise WriteError("Cannot apply $mul to a value of non-numeric type", 14)
        doc[field_name] = _num_result(cur, value, cur * value)


def _bson_lt(a, b):
    return mm_filter.bson_compare(lambda x, y: x < y, a, b)


def _max_updater(doc, field_name, value):
    if isinstance(doc, dict):
        if field_name not in doc or _bson_lt(doc[field_name], value):
            doc[field_name] = value


def _min_updater(doc, field_name, value):
    if isinstance(doc, dict):
        if field_name not in doc or _bson_lt(value, doc[field_name]):
            doc[field_name] = value


EPOCH = datetime.datetime(1970, 1, 1)


def _date_trunc(parser, spec):
    """$dateTrunc (MongoDB 5.0+): UTC or fixed-offset/Olson timezones, binSize, startOfWeek."""
    if not isinstance(spec, dict) or "date" not in spec or "unit" not in spec:
        raise OperationFailure("$dateTrunc requires 'date' and 'unit' parameters", 5439007)
    try:
        date = parser.parse(spec["date"])
    except KeyError:
        return None
    unit = parser.parse(spec["unit"])
    bin_size = parser.parse(spec.get("binSize", 1))
    tz_name = parser.parse(spec.get("timezone", "UTC"))
    start_of_week = parser.parse(spec.get("startOfWeek", "sunday"))
    if date is None or unit is None or bin_size is None or tz_name is None:
        return None
    if isinstance(date, ObjectId):
        date = date.generation_time.replace(tzinfo=None)
    if isinstance(date, Timestamp):
        date = date.as_datetime().replace(tzinfo=None)
    if not isinstance(date, datetime.datetime):
        raise OperationFailure("$dateTrunc requires 'date' to be a date, but got %s"
                               % type(date).__name__, 5439012)
    if not _is_number(bin_size) or int(bin_size) != bin_size or bin_size < 1:
        raise OperationFailure("$dateTrunc requires 'binSize' to be a positive 64-bit integer",
                               5439017)
    bin_size = int(bin_size)
    tz = _parse_tz(tz_name)
    local = date.replace(tzinfo=datetime.timezone.utc).astimezone(tz).replace(tzinfo=None)
    ref = datetime.datetime(2000, 1, 1)  # MongoDB's reference point for bins
    fixed = {"millisecond": 1, "second": 1000, "minute": 60_000, "hour": 3_600_000,
             "day": 86_400_000}
    if unit in fixed:
        step = fixed[unit] * bin_size
        ms = (local - ref) // datetime.timedelta(milliseconds=1)
        out = ref + datetime.timedelta(milliseconds=(ms // step) * step)
    elif unit == "week":
        days = {"monday": 0, "mon": 0, "tuesday": 1, "tue": 1, "wednesday": 2, "wed": 2,
                "thursday": 3, "thu": 3, "friday": 4, "fri": 4, "saturday": 5, "sat": 5,
                "sunday": 6, "sun": 6}
        sow = days.get(str(start_of_week).lower())
        if sow is None:
            raise OperationFailure("$dateTrunc parameter 'startOfWeek' value cannot be "
                                   "recognized as a day of a week: %s" % start_of_week, 5439016)
        # 2000-01-02 is a Sunday; pick the first `sow` weekday on or after 2000-01-01.
        week_ref = ref + datetime.timedelta(days=(sow - ref.weekday()) % 7)
        step = 7 * 86_400_000 * bin_size
        ms = (local - week_ref) // datetime.timedelta(milliseconds=1)
        out = week_ref + datetime.timedelta(milliseconds=(ms // step) * step)
    elif unit in ("month", "quarter", "year"):
        months = {"month": 1, "quarter": 3, "year": 12}[unit] * bin_size
        total = (local.year - 2000) * 12 + (local.month - 1)
        total = (total // months) * months
        out = datetime.datetime(2000 + total // 12, total % 12 + 1, 1)
    else:
        raise OperationFailure("$dateTrunc parameter 'unit' value cannot be recognized as a "
                               "time unit: %s" % unit, 5439014)
    if tz is not datetime.timezone.utc:
        out = _localize(out, tz).astimezone(datetime.timezone.utc).replace(tzinfo=None)
    return out


def _parse_tz(name):
    if name in ("UTC", "GMT", "Z", None):
        return datetime.timezone.utc
    m = re.fullmatch(r"([+-])(\d{2}):?(\d{2})?", str(name))
    if m:
        delta = datetime.timedelta(hours=int(m.group(2)), minutes=int(m.group(3) or 0))
        return datetime.timezone(delta if m.group(1) == "+" else -delta)
    try:
        import zoneinfo
        return zoneinfo.ZoneInfo(str(name))
    except Exception as err:  # noqa: BLE001
        raise OperationFailure("unrecognized time zone identifier: \"%s\"" % name, 40485) from err


def _localize(naive, tz):
    return naive.replace(tzinfo=tz)


def _patched_date_operator(self, operator, values):
    if operator == "$dateTrunc":
        return _date_trunc(self, values)
    return _orig_date_operator(self, operator, values)


def _patched_arithmetic(self, operator, values):
    if operator == "$add" and isinstance(values, (list, tuple)):
        parsed = list(self.parse_many(values))
        if any(v is None for v in parsed):
            return None
        dates = [v for v in parsed if isinstance(v, datetime.datetime)]
        nums = [v for v in parsed if not isinstance(v, datetime.datetime)]
        if len(dates) > 1:
            raise OperationFailure("only one date allowed in an $add expression", 16612)
        for v in nums:
            if not _is_number(v):
                raise OperationFailure("$add only supports numeric or date types, not %s"
                                       % type(v).__name__, 16554)
        total = 0
        for v in nums:
            total = _num_result(total, v, total + v)
        if dates:
            return dates[0] + datetime.timedelta(milliseconds=round(total))
        return total
    if operator == "$mod" and isinstance(values, (list, tuple)) and len(values) == 2:
        a, b = self.parse_many(values)
        if a is None or b is None:
            return None
        if not _is_number(a) or not _is_number(b):
            raise OperationFailure("$mod only supports numeric types", 16611)
        if b == 0:
            raise OperationFailure("can't $mod by zero", 16610)
        if isinstance(a, int) and isinstance(b, int):
            res = abs(a) % abs(b)
            return _num_result(a, b, -res if a < 0 else res)
        return math.fmod(a, b)
    if operator == "$subtract" and isinstance(values, (list, tuple)) and len(values) == 2:
        a, b = self.parse_many(values)
        if a is None or b is None:
            return None
        if isinstance(a, datetime.datetime) and isinstance(b, datetime.datetime):
            return Int64(to_millis(a) - to_millis(b))
        if isinstance(a, datetime.datetime) and _is_number(b):
            return a - datetime.timedelta(milliseconds=round(b))
        if _is_number(a) and _is_number(b):
            return _num_result(a, b, a - b)
        raise OperationFailure("cant $subtract a %s from a %s" % (
            type(b).__name__, type(a).__name__), 16556)
    if operator == "$multiply" and isinstance(values, (list, tuple)):
        parsed = list(self.parse_many(values))
        if any(v is None for v in parsed):
            return None
        total = 1
        for v in parsed:
            if not _is_number(v):
                raise OperationFailure("$multiply only supports numeric types", 16555)
            total = _num_result(total, v, total * v)
        return total
    return _orig_arithmetic(self, operator, values)


def _one_arg(parser, arg):
    if isinstance(arg, list):
        if len(arg) != 1:
            raise OperationFailure("Expression takes exactly 1 arguments. %d were passed in."
                                   % len(arg), 16020)
        arg = arg[0]
    try:
        return parser.parse(arg)
    except KeyError:
        return None


def _to_long(parser, arg):
    v = _one_arg(parser, arg)
    if v is None:
        return None
    if isinstance(v, datetime.datetime):
        return Int64(to_millis(v))
    if isinstance(v, bson.Decimal128):
        v = v.to_decimal()
    if isinstance(v, str):
        try:
            return Int64(int(v.strip()))
        except ValueError as err:
            raise OperationFailure("Failed to parse number '%s' in $convert with no onError "
                                   "value" % v, 241) from err
    if isinstance(v, (bool, int, float, decimal.Decimal)):
        return Int64(int(v))
    raise OperationFailure("Unsupported conversion from %s to long in $convert with no "
                           "onError value" % type(v).__name__, 241)


def _to_double(parser, arg):
    v = _one_arg(parser, arg)
    if v is None:
        return None
    if isinstance(v, datetime.datetime):
        return float(to_millis(v))
    if isinstance(v, bson.Decimal128):
        v = v.to_decimal()
    try:
        return float(v)
    except (TypeError, ValueError) as err:
        raise OperationFailure("Unsupported conversion from %s to double in $convert with no "
                               "onError value" % type(v).__name__, 241) from err


def _to_date(parser, arg):
    v = _one_arg(parser, arg)
    if v is None or isinstance(v, datetime.datetime):
        return v
    if isinstance(v, ObjectId):
        return v.generation_time.replace(tzinfo=None)
    if isinstance(v, Timestamp):
        return v.as_datetime().replace(tzinfo=None)
    if isinstance(v, bson.Decimal128):
        v = v.to_decimal()
    if isinstance(v, (int, float, decimal.Decimal)) and not isinstance(v, bool):
        return EPOCH + datetime.timedelta(milliseconds=int(v))
    if isinstance(v, str):
        try:
            dt = datetime.datetime.fromisoformat(v.replace("Z", "+00:00"))
        except ValueError as err:
            raise OperationFailure("Error parsing date string '%s'" % v, 241) from err
        if dt.tzinfo is not None:
            dt = dt.astimezone(datetime.timezone.utc).replace(tzinfo=None)
        return dt.replace(microsecond=dt.microsecond // 1000 * 1000)
    raise OperationFailure("Unsupported conversion from %s to date in $convert with no "
                           "onError value" % type(v).__name__, 241)


def _to_string(parser, arg):
    v = _one_arg(parser, arg)
    if isinstance(v, datetime.datetime):
        return v.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (v.microsecond // 1000)
    return _orig_parse(parser, {"$toString": {"$literal": v}})


_FIXED_MS = {"millisecond": 1, "second": 1000, "minute": 60_000, "hour": 3_600_000,
             "day": 86_400_000, "week": 7 * 86_400_000}
_MONTHS = {"month": 1, "quarter": 3, "year": 12}


def _date_add(parser, spec, sign):
    if not isinstance(spec, dict) or not {"startDate", "unit", "amount"} <= set(spec):
        raise OperationFailure("$dateAdd/$dateSubtract require startDate, unit and amount",
                               5166402)
    try:
        start = parser.parse(spec["startDate"])
        unit = parser.parse(spec["unit"])
        amount = parser.parse(spec["amount"])
    except KeyError:
        return None
    if start is None or unit is None or amount is None:
        return None
    if not isinstance(start, datetime.datetime):
        raise OperationFailure("$dateAdd requires startDate to be convertible to a date",
                               5166403)
    amount = int(amount) * sign
    if unit in _FIXED_MS:
        return start + datetime.timedelta(milliseconds=amount * _FIXED_MS[unit])
    if unit in _MONTHS:
        total = start.year * 12 + start.month - 1 + amount * _MONTHS[unit]
        year, month = divmod(total, 12)
        month += 1
        days = [31, 29 if year % 4 == 0 and (year % 100 != 0 or year % 400 == 0) else 28,
                31, 30, 31, 30, 31, 31, 30, 31, 30, 31][month - 1]
        return start.replace(year=year, month=month, day=min(start.day, days))
    raise OperationFailure("$dateAdd parameter 'unit' value cannot be recognized as a time "
                           "unit: %s" % unit, 5166405)


def _date_diff(parser, spec):
    if not isinstance(spec, dict) or not {"startDate", "endDate", "unit"} <= set(spec):
        raise OperationFailure("$dateDiff requires startDate, endDate and unit", 5166301)
    if spec.get("timezone") not in (None, "UTC", "GMT"):
        raise NotImplementedError("$dateDiff with a timezone")
    try:
        start = parser.parse(spec["startDate"])
        end = parser.parse(spec["endDate"])
        unit = parser.parse(spec["unit"])
    except KeyError:
        return None
    if start is None or end is None or unit is None:
        return None
    if unit in _MONTHS:
        months = (end.year - start.year) * 12 + end.month - start.month
        return Int64(months // _MONTHS[unit] if unit != "quarter" else
                     ((end.year * 12 + end.month - 1) // 3 - (start.year * 12 + start.month - 1)
                      // 3))
    trunc = {"date": start, "unit": unit}
    if unit == "week":
        trunc["startOfWeek"] = spec.get("startOfWeek", "sunday")
    a = _date_trunc(parser, dict(trunc, date={"$literal": start}))
    b = _date_trunc(parser, dict(trunc, date={"$literal": end}))
    return Int64((to_millis(b) - to_millis(a)) // _FIXED_MS[unit])


_EXTRA_EXPRESSIONS = {
    "$toLong": _to_long,
    "$toDouble": _to_double,
    "$toDate": _to_date,
    "$toString": _to_string,
    "$dateAdd": lambda parser, spec: _date_add(parser, spec, 1),
    "$dateSubtract": lambda parser, spec: _date_add(parser, spec, -1),
    "$dateDiff": _date_diff,
}

# Valid MongoDB expressions mongomock does not know (it would call them unrecognized).
_UNSUPPORTED_EXPRESSIONS = {
    "$dateToParts", "$getField", "$setField", "$unsetField", "$median", "$percentile",
    "$tsSecond", "$tsIncrement", "$toDecimal", "$toObjectId", "$toUUID", "$bsonSize",
    "$binarySize", "$function", "$accumulator", "$sampleRate", "$rand", "$top", "$bottom",
    "$topN", "$bottomN", "$firstN", "$lastN", "$maxN", "$minN", "$sortArray",
    "$regexFind", "$regexFindAll", "$regexMatch", "$replaceOne", "$replaceAll",
    "$isNumber", "$round", "$trunc", "$sinh", "$cosh", "$tanh",
}


def _patched_parse(self, expression):
    if isinstance(expression, dict) and len(expression) == 1:
        key = next(iter(expression))
        handler = _EXTRA_EXPRESSIONS.get(key)
        if handler is not None:
            return handler(self, expression[key])
        if key in _UNSUPPORTED_EXPRESSIONS and key not in _MM_KNOWN:
            raise NotImplementedError("the %s expression" % key)
    return _orig_parse(self, expression)


def _mm_known_expressions():
    """Every expression operator mongomock's parser dispatches on."""
    known = set()
    for name in ("arithmetic_operators", "project_operators", "projection_operators",
                 "comparison_operators", "date_operators", "array_operators",
                 "conditional_operators", "control_flow_operators", "set_operators",
                 "string_operators", "type_convertion_operators", "type_operators",
                 "boolean_operators"):
        known.update(getattr(mm_agg, name, ()))
    return known


_MM_KNOWN = _mm_known_expressions()


def _replace_with_stage(in_collection, database, options):
    return mm_agg._handle_replace_root_stage(in_collection, database, {"newRoot": options})


def _unset_stage(in_collection, database, options):
    fields = [options] if isinstance(options, str) else list(options)
    return mm_agg._handle_project_stage(in_collection, database, {f: 0 for f in fields})


def _group_stage_id_first(in_collection, database, options):
    out = _orig_group_stage(in_collection, database, options)
    return [dict(itertools.chain((("_id", d.get("_id")),),
                                 ((k, v) for k, v in d.items() if k != "_id"))) for d in out]


def _sum_values(values):
    """$sum as MongoDB computes it: ignores non-numbers (and booleans), keeps longs long."""
    total = 0
    for v in values:
        if isinstance(v, bson.Decimal128):
            v = v.to_decimal()
        if isinstance(v, bool) or not isinstance(v, (int, float, decimal.Decimal)):
            continue
        if isinstance(total, decimal.Decimal) or isinstance(v, decimal.Decimal):
            total = decimal.Decimal(total) + decimal.Decimal(v)
        else:
            total = _num_result(total, v, total + v)
    if isinstance(total, decimal.Decimal):
        return bson.Decimal128(total)
    return total


def _bson_extreme(values, pick):
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    return pick(vals, key=mm_filter.BsonComparable)


def _noop_remove_expired(self):
    """The stand-in runs its own TTL monitor (as MongoDB does, every 60 s by default)."""


_orig_parse = mm_agg._Parser.parse
_orig_group_stage = mm_agg._handle_group_stage
_orig_iter_documents = mm_coll.Collection._iter_documents
_orig_date_operator = mm_agg._Parser._handle_date_operator
_orig_arithmetic = mm_agg._Parser._handle_arithmetic_operator


def patch_mongomock():
    mm_coll.Collection._iter_documents = _fast_iter_documents
    mm_coll.Collection._ensure_uniques = _fast_ensure_uniques
    mm_coll._updaters["$inc"] = _inc_updater
    mm_coll._updaters["$mul"] = _mul_updater
    mm_coll._updaters["$max"] = _max_updater
    mm_coll._updaters["$min"] = _min_updater
    mm_store.CollectionStore._remove_expired_documents = _noop_remove_expired
    mm_agg.date_operators.append("$dateTrunc")
    mm_agg._Parser._handle_date_operator = _patched_date_operator
    mm_agg._Parser._handle_arithmetic_operator = _patched_arithmetic
    mm_agg._Parser.parse = _patched_parse
    mm_agg._PIPELINE_HANDLERS["$replaceWith"] = _replace_with_stage
    mm_agg._PIPELINE_HANDLERS["$unset"] = _unset_stage
    mm_agg._PIPELINE_HANDLERS["$group"] = _group_stage_id_first
    mm_agg._GROUPING_OPERATOR_MAP["$sum"] = _sum_values
    mm_agg._GROUPING_OPERATOR_MAP["$min"] = lambda values: _bson_extreme(values, min)
    mm_agg._GROUPING_OPERATOR_MAP["$max"] = lambda values: _bson_extreme(values, max)
    mm_agg._GROUPING_OPERATOR_MAP["$count"] = len


# ---------------------------------------------------------------------------------------
# Change events
# ---------------------------------------------------------------------------------------

class Event:
    __slots__ = ("seq", "ts", "wall", "op", "db", "coll", "doc_id", "full", "pre", "post",
                 "update_desc", "images")

    def __init__(self, op, db, coll, doc_id=None, full=None, pre=None, post=None,
                 update_desc=None, images=False):
        self.op = op
        self.db = db
        self.coll = coll
        self.doc_id = doc_id
        self.full = full
        self.pre = pre
        self.post = post
        self.update_desc = update_desc
        self.images = images
        self.seq = 0
        self.ts = None
        self.wall = None


def make_token(ts, seq, sub):
    """Resume token. Ordered by (seq, sub); sub 0 = event, 1 = invalidate, 2 = high-water."""
    return {"_data": "82%08X%08X%016X%02X" % (ts.time, ts.inc, seq, sub)}


def parse_token(tok):
    data = tok.get("_data") if isinstance(tok, dict) else None
    if not isinstance(data, str) or not re.fullmatch(r"82[0-9A-F]{34}", data):
        raise CommandError(260, "Invalid resume token: %r (not issued by this server)" % (tok,))
    t = int(data[2:10], 16)
    i = int(data[10:18], 16)
    seq = int(data[18:34], 16)
    sub = int(data[34:36], 16)
    return Timestamp(t, i), seq, sub


class ChangeStreamCursor:
    def __init__(self, cid, ns, db, coll, cluster, full_doc, before_change, stages, pos):
        self.id = cid
        self.ns = ns
        self.db = db
        self.coll = coll  # None for a database-level stream
        self.cluster = cluster
        self.full_doc = full_doc
        self.before_change = before_change
        self.stages = stages
        self.pos = pos  # (seq, sub) of everything consumed so far
        self.closed = False
        self.killed = False
        self.last_token = None


class QueryCursor:
    def __init__(self, cid, ns, docs):
        self.id = cid
        self.ns = ns
        self.docs = docs
        self.pos = 0
        self.killed = False


# ---------------------------------------------------------------------------------------
# The server
# ---------------------------------------------------------------------------------------

class Server:
    def __init__(self, host, port, oplog_size, ttl_interval, set_name):
        patch_mongomock()
        self.host = host
        self.port = port
        self.set_name = set_name
        self.me = None
        self.client = mongomock.MongoClient()
        self.colls = {}
        self.cursors = {}
        self.oplog = []
        self.oplog_size = max(1, oplog_size)
        self.base_seq = time.time_ns()
        self.last_seq = self.base_seq
        self.trimmed_seq = None  # seq of the newest event dropped from the history
        self.trimmed_ts = None
        self.ts_time = 0
        self.ts_inc = 0
        self.start_ts = self.next_ts()
        self.last_ts = self.start_ts
        self.changed = asyncio.Event()
        self.shutdown = asyncio.Event()
        self.failpoints = {}
        self.conn_ids = itertools.count(1)
        self.conns = set()
        self.total_conns = 0
        self.process_id = ObjectId()
        self.election_id = ObjectId("7fffffff0000000000000001")
        self.started = time.monotonic()
        self.ttl_interval = ttl_interval
        self.ttl_enabled = True
        self.ttl_wakeup = asyncio.Event()
        self.commands = {
            "hello": self.cmd_hello,
            "isMaster": self.cmd_hello,
            "ismaster": self.cmd_hello,
            "buildInfo": self.cmd_build_info,
            "buildinfo": self.cmd_build_info,
            "ping": lambda db, body, conn: {},
            "endSessions": lambda db, body, conn: {},
            "killSessions": lambda db, body, conn: {},
            "killAllSessions": lambda db, body, conn: {},
            "startSession": self.cmd_start_session,
            "connectionStatus": lambda db, body, conn: {
                "authInfo": {"authenticatedUsers": [], "authenticatedUserRoles": []}},
            "getParameter": self.cmd_get_parameter,
            "setParameter": self.cmd_set_parameter,
            "serverStatus": self.cmd_server_status,
            "dbStats": self.cmd_db_stats,
            "insert": self.cmd_insert,
            "update": self.cmd_update,
            "delete": self.cmd_delete,
            "findAndModify": self.cmd_find_and_modify,
            "findandmodify": self.cmd_find_and_modify,
            "find": self.cmd_find,
            "getMore": self.cmd_get_more,
            "killCursors": self.cmd_kill_cursors,
            "aggregate": self.cmd_aggregate,
            "count": self.cmd_count,
            "distinct": self.cmd_distinct,
            "create": self.cmd_create,
            "collMod": self.cmd_coll_mod,
            "createIndexes": self.cmd_create_indexes,
            "listIndexes": self.cmd_list_indexes,
            "dropIndexes": self.cmd_drop_indexes,
            "deleteIndexes": self.cmd_drop_indexes,
            "listCollections": self.cmd_list_collections,
            "listDatabases": self.cmd_list_databases,
            "drop": self.cmd_drop,
            "dropDatabase": self.cmd_drop_database,
            "configureFailPoint": self.cmd_configure_fail_point,
            "saslStart": self.cmd_auth,
            "saslContinue": self.cmd_auth,
            "authenticate": self.cmd_auth,
        }

    # -- clocks and tokens ---------------------------------------------------------------

    def next_ts(self):
        now = int(time.time())
        if now > self.ts_time:
            self.ts_time, self.ts_inc = now, 1
        else:
            self.ts_inc += 1
        ts = Timestamp(self.ts_time, self.ts_inc)
        self.last_ts = ts
        return ts

    SIGNATURE = {"hash": Binary(b"\x00" * 20, 0), "keyId": Int64(0)}

    def cluster_time_doc(self):
        return {"clusterTime": self.last_ts, "signature": self.SIGNATURE}

    # -- collections ---------------------------------------------------------------------

    def coll(self, db, name):
        c = self.colls.get((db, name))
        if c is None:
            if not isinstance(name, str) or not name or "$" in name or "\x00" in name:
                raise CommandError(73, "Invalid collection name: %r" % (name,))
            c = self.colls[(db, name)] = self.client[db][name]
        return c

    def exists(self, db, name):
        dbs = self.client._store[db]
        return name in dbs._collections and bool(dbs._collections[name].is_created)

    def ensure_created(self, db, name):
        c = self.coll(db, name)
        st = c._store
        if not st.is_created:
            st.create()
            meta = _meta(st)
            meta["indexes"]["_id_"] = {"v": 2, "key": {"_id": 1}, "name": "_id_"}
        return c

    def collection_names(self, db):
        return sorted(self.client._store[db].list_created_collection_names())

    # -- oplog ---------------------------------------------------------------------------

    def record(self, ev):
        self.last_seq += 1
        ev.seq = self.last_seq
        ev.ts = self.next_ts()
        ev.wall = utcnow_ms()
        self.oplog.append(ev)
        excess = len(self.oplog) - self.oplog_size
        if excess > 0:
            # Trim in chunks so appends stay O(1) amortised.
            if excess >= max(1, self.oplog_size // 8) or len(self.oplog) > 2 * self.oplog_size:
                dropped = self.oplog[excess - 1]
                del self.oplog[:excess]
                self.trimmed_seq = dropped.seq
                self.trimmed_ts = dropped.ts
        self.changed.set()
        self.changed = asyncio.Event()

    def retained_from_seq(self):
        """Oldest seq still retained (logical history = the last oplog_size events)."""
        if len(self.oplog) > self.oplog_size:
            return self.oplog[len(self.oplog) - self.oplog_size].seq
        return self.oplog[0].seq if self.oplog else self.last_seq + 1

    def history_lost_before(self):
        """Resume points with seq below this have lost events."""
        if len(self.oplog) > self.oplog_size:
            return self.oplog[len(self.oplog) - self.oplog_size - 1].seq
        if self.trimmed_seq is not None:
            return self.trimmed_seq
        return self.base_seq

    def oplog_index(self, seq):
        """Index of the first retained event with seq >= `seq`."""
        if not self.oplog:
            return 0
        first = self.oplog[0].seq
        return min(max(0, seq - first), len(self.oplog))

    # -- write paths (all writes go through these, so indexes and the oplog stay right) ---

    def ns(self, db, name):
        return "%s.%s" % (db, name)

    def images_enabled(self, st):
        opt = _meta(st)["options"].get("changeStreamPreAndPostImages")
        return isinstance(opt, dict) and bool(opt.get("enabled"))

    def do_insert(self, db, name, doc):
        c = self.ensure_created(db, name)
        st = c._store
        meta = _meta(st)
        ts_opts = meta["options"].get("timeseries")
        if ts_opts:
            tf = ts_opts.get("timeField")
            if not isinstance(doc.get(tf), datetime.datetime):
                raise WriteError("'%s' must be present and contain a valid BSON UTC datetime "
                                 "value" % tf, 2)
        if not isinstance(doc, dict):
            raise WriteError("document must be an object", 2)
        if "_id" not in doc:
            doc = dict(itertools.chain((("_id", ObjectId()),), doc.items()))
        elif next(iter(doc)) != "_id":
            doc = dict(itertools.chain((("_id", doc["_id"]),),
                                       ((k, v) for k, v in doc.items() if k != "_id")))
        if isinstance(doc["_id"], (list, Regex, re.Pattern)):
            raise WriteError("can't use an array for _id" if isinstance(doc["_id"], list)
                             else "can't use a regex for _id", 53)
        _check_field_names(doc)
        key = id_store_key(doc["_id"])
        if key in st._documents:
            raise DupKey(self.ns(db, name), "_id_", {"_id": 1}, {"_id": doc["_id"]})
        # What mongomock's Collection._insert does, minus its per-call version parsing and
        # BSON re-encoding (documents arrive as BSON, so they are valid already).
        doc = mm_helpers.patch_datetime_awareness_in_document(doc)
        st[key] = doc
        try:
            _fast_ensure_uniques(c, doc)
        except BaseException:
            del st[key]
            raise
        stored = doc
        if not ts_opts:
            self.record(Event("insert", db, name, doc_id=stored["_id"],
                              full=copy.deepcopy(stored)))
        return stored["_id"]

    def do_update(self, db, name, q, u, upsert=False, multi=False, array_filters=None,
                  want=None):
        """Apply one update statement. Returns (n, nModified, upserted_id, before, after).

        `before`/`after` are copies of the first matched document before/after the update
        (only computed when `want` is set, for findAndModify)."""
        if array_filters:
            raise CommandError(238, "arrayFilters are not supported by the MongoDB stand-in "
                                    "(mongomock)")
        if not isinstance(q, dict):
            raise CommandError(14, "q must be an object")
        is_pipeline = isinstance(u, list)
        if not is_pipeline and not isinstance(u, dict):
            raise CommandError(14, "u must be an object or an array")
        is_replace = not is_pipeline and not any(k.startswith("$") for k in u)
        if not is_pipeline and not is_replace and not all(k.startswith("$") for k in u):
            bad = next(k for k in u if not k.startswith("$"))
            raise CommandError(9, "Unknown modifier: %s. Expected a valid update modifier or "
                                  "pipeline-style update specified as an array" % bad)
        if not is_pipeline and not is_replace:
            for op in u:
                if op not in UPDATE_OPERATORS:
                    raise CommandError(9, "Unknown modifier: %s. Expected a valid update "
                                          "modifier or pipeline-style update specified as an "
                                          "array" % op)
                if not isinstance(u[op], dict):
                    raise CommandError(9, "Modifiers operate on fields but we found type %s "
                                          "instead. For example: {$mod: {<field>: ...}} not "
                                          "{%s: %s}" % (type(u[op]).__name__, op, u[op]))
        if is_replace and multi:
            raise CommandError(9, "multi update is not supported for replacement-style update")
        if is_replace:
            _check_field_names(u)
        c = self.coll(db, name)
        st = c._store
        images = self.images_enabled(st)
        if multi:
            matched = list(c._iter_documents(q))
        else:
            matched = list(itertools.islice(c._iter_documents(q), 1))
        n = n_mod = 0
        first_before = first_after = None
        for doc in matched:
            before = copy.deepcopy(doc)
            n += 1
            try:
                if is_replace:
                    if "_id" in u and not _same_id(u["_id"], before["_id"]):
                        raise WriteError(
                            "After applying the update, the (immutable) field '_id' was found "
                            "to have been altered to _id: %s" % render_value(u["_id"]), 66)
                    doc.clear()
                    doc["_id"] = before["_id"]
                    for k, v in copy.deepcopy(u).items():
                        if k != "_id":
                            doc[k] = v
                elif is_pipeline:
                    c._apply_update_pipeline(doc, u, None)
                else:
                    c._apply_update_document(doc, q, u, False)
                if "_id" not in doc or not _same_id(doc["_id"], before["_id"]):
                    raise WriteError(
                        "After applying the update, the (immutable) field '_id' was found to "
                        "have been altered to _id: %s" % render_value(doc.get("_id")), 66)
                if want is not None and first_before is None:
                    first_before = before
                if strict_eq(doc, before):
                    if want is not None and first_after is None:
                        first_after = copy.deepcopy(doc)
                    continue
                if is_pipeline or "$currentDate" in u:
                    # MongoDB stores dates with millisecond precision.
                    patched = mm_helpers.patch_datetime_awareness_in_document(doc)
                    doc.clear()
                    doc.update(patched)
                c._ensure_uniques(doc)
            except BaseException:
                doc.clear()
                doc.update(before)
                raise
            n_mod += 1
            after = copy.deepcopy(doc) if (want is not None or images or is_replace) else None
            if want is not None and first_after is None:
                first_after = after
            if is_replace:
                ev = Event("replace", db, name, doc_id=before["_id"], full=after,
                           pre=before if images else None, post=after if images else None,
                           images=images)
            else:
                ev = Event("update", db, name, doc_id=before["_id"],
                           update_desc=update_description(before, doc),
                           pre=before if images else None, post=after if images else None,
                           images=images)
            if not _meta(st)["options"].get("timeseries"):
                self.record(ev)
        if n == 0 and upsert:
            if is_replace:
                new = {}
                qid = _upsert_base(q).get("_id", NO_KEY)
                if "_id" in u:
                    new["_id"] = u["_id"]
                elif qid is not NO_KEY:
                    new["_id"] = qid
                for k, v in copy.deepcopy(u).items():
                    if k != "_id":
                        new[k] = v
            else:
                base = c._expand_dots(_upsert_base(q))
                new = {}
                if "_id" in base:
                    new["_id"] = base.pop("_id")
                new.update(copy.deepcopy(base))
                if is_pipeline:
                    c._apply_update_pipeline(new, u, None)
                else:
                    c._apply_update_document(new, q, u, True)
            upserted = self.do_insert(db, name, new)
            if want is not None:
                first_after = copy.deepcopy(c._store._documents[id_store_key(upserted)])
            return 1, 0, upserted, None, first_after
        return n, n_mod, None, first_before, first_after

    def do_delete(self, db, name, q, limit, sort=None):
        c = self.coll(db, name)
        st = c._store
        if not st.is_created:
            if not isinstance(q, dict):
                raise CommandError(14, "q must be an object")
            mm_filter.filter_applies(q, {})
            return []
        if sort:
            docs = self.sorted_docs(c, q, sort)
        else:
            docs = c._iter_documents(q)
        docs = list(itertools.islice(docs, 1)) if limit else list(docs)
        images = self.images_enabled(st)
        is_ts = bool(_meta(st)["options"].get("timeseries"))
        for doc in docs:
            del st[id_store_key(doc["_id"])]
            if not is_ts:
                self.record(Event("delete", db, name, doc_id=doc["_id"],
                                  pre=copy.deepcopy(doc) if images else None, images=images))
        return docs

    def do_drop(self, db, name, emit=True):
        """Drop a collection. Returns nIndexesWas or None if it did not exist."""
        if not self.exists(db, name):
            return None
        st = self.coll(db, name)._store
        n_idx = len(_meta(st)["indexes"])
        is_ts = bool(_meta(st)["options"].get("timeseries"))
        st.drop()
        _reset_meta(st)
        if emit and not is_ts:
            self.record(Event("drop", db, name))
        return n_idx

    def sorted_docs(self, c, filt, sort):
        docs = list(c._iter_documents(filt))
        for key, direction in reversed(list(sort.items())):
            if key == "$natural":
                if direction < 0:
                    docs.reverse()
                continue
            if isinstance(direction, dict):
                raise CommandError(238, "sorting by %r is not supported by the stand-in"
                                   % direction)
            docs.sort(key=lambda d, k=key: mm_filter.resolve_sort_key(k, d),
                      reverse=direction < 0)
        return docs

    # -- command plumbing ----------------------------------------------------------------

    def new_cursor_id(self):
        while True:
            cid = random.randint(1, 2**62)
            if cid not in self.cursors:
                return cid

    def cursor_reply(self, ns, docs, batch_size, single_batch=False, first=True):
        """Register the rest of `docs` as a cursor when they don't fit in the first batch."""
        if batch_size is None:
            batch_size = 101
        if single_batch:
            batch, rest = docs if batch_size <= 0 else docs[:batch_size], []
        else:
            # batchSize 0: open the cursor and return nothing yet, as MongoDB does.
            n = batch_fits(docs, 0, batch_size) if batch_size > 0 else 0
            batch, rest = docs[:n], docs[n:]
        cid = 0
        if rest:
            cid = self.new_cursor_id()
            cur = QueryCursor(cid, ns, rest)
            self.cursors[cid] = cur
        return {"cursor": {"firstBatch" if first else "nextBatch": batch, "id": Int64(cid),
                           "ns": ns}}

    def collection_name(self, body, name):
        v = body.get(name)
        if not isinstance(v, str):
            raise CommandError(73, "collection name has invalid type %s" % type(v).__name__)
        return v

    # -- failpoints ----------------------------------------------------------------------

    def cmd_configure_fail_point(self, db, body, conn):
        if db != "admin":
            raise CommandError(13, "configureFailPoint may only be run against the admin "
                                   "database.")
        name = body.get("configureFailPoint")
        if name != "failCommand":
            raise CommandError(2, "unknown fail point: %s (the stand-in supports failCommand)"
                               % name)
        mode = body.get("mode")
        data = body.get("data") or {}
        if mode == "off":
            self.failpoints.pop(name, None)
            return {"count": 0}
        if mode == "alwaysOn":
            times, skip = None, 0
        elif isinstance(mode, dict) and "times" in mode:
            times, skip = int(mode["times"]), 0
        elif isinstance(mode, dict) and "skip" in mode:
            times, skip = None, int(mode["skip"])
        else:
            raise CommandError(2, "unsupported fail point mode: %r" % (mode,))
        if not isinstance(data.get("failCommands"), list):
            raise CommandError(2, "failCommand fail point requires data.failCommands")
        self.failpoints[name] = {"times": times, "skip": skip, "data": data}
        return {"count": 0}

    def check_failpoint(self, name, conn):
        fp = self.failpoints.get("failCommand")
        if fp is None or name == "configureFailPoint":
            return None
        data = fp["data"]
        if name not in data.get("failCommands", []):
            return None
        app = data.get("appName")
        if app is not None and app != conn.app_name:
            return None
        if fp["skip"] > 0:
            fp["skip"] -= 1
            return None
        if fp["times"] is not None:
            fp["times"] -= 1
            if fp["times"] <= 0:
                self.failpoints.pop("failCommand", None)
        return data

    # -- dispatch ------------------------------------------------------------------------

    def dispatch(self, body, conn):
        """Run one command. Returns the reply document, or a coroutine that produces it
        (for commands that wait: awaitable hello, change-stream getMore, blocked fail
        points). Raises CloseConnection when a fail point says so."""
        if not body:
            return self.finish_reply(CommandError(9, "empty command").to_doc())
        name = next(iter(body))
        db = body.get("$db", "admin")
        if VERBOSE:
            log.info("conn%d %s.%s %s", conn.id, db, name, _short(body))
        fp = self.check_failpoint(name, conn)
        if fp is not None:
            if fp.get("blockConnection"):
                return self.blocked(fp, name, db, body, conn)
            return self.apply_failpoint(fp, name, db, body, conn)
        return self.run_command(name, db, body, conn, None)

    async def blocked(self, fp, name, db, body, conn):
        await asyncio.sleep(float(fp.get("blockTimeMS", 0)) / 1000.0)
        reply = self.apply_failpoint(fp, name, db, body, conn)
        if asyncio.iscoroutine(reply):
            reply = await reply
        return reply

    def apply_failpoint(self, fp, name, db, body, conn):
        if fp.get("closeConnection"):
            raise CloseConnection()
        if "errorCode" in fp:
            err = CommandError(int(fp["errorCode"]),
                               "Failing command %s via 'failCommand' failpoint" % name,
                               labels=fp.get("errorLabels"))
            return self.finish_reply(err.to_doc())
        return self.run_command(name, db, body, conn, fp)

    def run_command(self, name, db, body, conn, fp):
        handler = self.commands.get(name)
        try:
            if handler is None:
                raise CommandError(59, "no such command: '%s'" % name)
            if not isinstance(db, str) or not db or any(ch in db for ch in "/\\. \"$"):
                raise CommandError(73, "Invalid database name: %r" % (db,))
            res = handler(db, body, conn)
            if asyncio.iscoroutine(res):
                return self.await_command(res, fp)
            return self.finish_reply(res, fp)
        except CommandError as err:
            return self.finish_reply(err.to_doc())
        except Exception as err:  # noqa: BLE001 - always answer, never drop the connection
            return self.finish_reply(error_reply(err))

    async def await_command(self, coro, fp):
        try:
            res = await coro
        except CommandError as err:
            return self.finish_reply(err.to_doc())
        except asyncio.CancelledError:
            raise
        except Exception as err:  # noqa: BLE001
            return self.finish_reply(error_reply(err))
        return self.finish_reply(res, fp)

    def finish_reply(self, reply, fp=None):
        reply.setdefault("ok", 1.0)
        if fp is not None and "writeConcernError" in fp and reply.get("ok"):
            reply["writeConcernError"] = fp["writeConcernError"]
        reply["$clusterTime"] = self.cluster_time_doc()
        reply["operationTime"] = self.last_ts
        return reply

    # -- commands: handshake and admin ---------------------------------------------------

    def cmd_hello(self, db, body, conn):
        if not conn.handshaken:
            client = body.get("client") or {}
            conn.app_name = (client.get("application") or {}).get("name")
            conn.handshaken = True
        tv = body.get("topologyVersion")
        wait_ms = body.get("maxAwaitTimeMS")
        if isinstance(tv, dict) and wait_ms is not None:
            return self.awaitable_hello(db, body, conn, float(wait_ms) / 1000.0)
        return self.hello_reply(body, conn)

    async def awaitable_hello(self, db, body, conn, wait):
        # Streaming hello: our topology never changes, so wait the full maxAwaitTimeMS
        # (without blocking anyone else) unless we are shutting down.
        try:
            await asyncio.wait_for(self.shutdown.wait(), wait)
        except asyncio.TimeoutError:
            pass
        if self.shutdown.is_set():
            raise CommandError(91, "The server is in quiesce mode and will shut down")
        return self.hello_reply(body, conn)

    def hello_reply(self, body, conn):
        name = next(iter(body))
        reply = {"topologyVersion": {"processId": self.process_id, "counter": Int64(0)},
                 "hosts": [self.me], "setName": self.set_name, "setVersion": 1}
        if name == "hello":
            reply["isWritablePrimary"] = True
        else:
            reply["ismaster"] = True
        now = utcnow_ms()
        op_time = {"ts": self.last_ts, "t": Int64(1)}
        reply.update({
            "secondary": False,
            "primary": self.me,
            "me": self.me,
            "electionId": self.election_id,
            "lastWrite": {"opTime": op_time, "lastWriteDate": now,
                          "majorityOpTime": op_time, "majorityWriteDate": now},
            "maxBsonObjectSize": MAX_BSON,
            "maxMessageSizeBytes": MAX_MESSAGE,
            "maxWriteBatchSize": MAX_WRITE_BATCH,
            "localTime": now,
            "logicalSessionTimeoutMinutes": 30,
            "connectionId": conn.id,
            "minWireVersion": 0,
            "maxWireVersion": MAX_WIRE_VERSION,
            "readOnly": False,
        })
        if body.get("helloOk"):
            reply["helloOk"] = True
        return reply

    def cmd_build_info(self, db, body, conn):
        return {"version": SERVER_VERSION, "gitVersion": "mongopulse-standin",
                "versionArray": [7, 0, 0, 0], "bits": 64, "debug": False,
                "maxBsonObjectSize": MAX_BSON, "modules": [], "javascriptEngine": "none",
                "storageEngines": ["inMemory"],
                "openssl": {"running": "disabled", "compiled": "disabled"},
                "standin": "mongomock %s" % mongomock.__version__}

    def cmd_auth(self, db, body, conn):
        # The stand-in has no users: every credential is rejected, as a real server rejects
        # an unknown user.
        raise CommandError(18, "Authentication failed.")

    def cmd_start_session(self, db, body, conn):
        return {"id": {"id": Binary(uuid.uuid4().bytes, 4)}, "timeoutMinutes": 30}

    def _parameters(self):
        return {"featureCompatibilityVersion": {"version": "7.0"},
                "ttlMonitorSleepSecs": self.ttl_interval,
                "ttlMonitorEnabled": self.ttl_enabled,
                "enableTestCommands": True}

    def cmd_get_parameter(self, db, body, conn):
        if db != "admin":
            raise CommandError(13, "getParameter may only be run against the admin database.")
        params = self._parameters()
        if body.get("getParameter") == "*":
            return dict(params)
        out = {k: v for k, v in params.items() if k in body}
        if not out:
            raise CommandError(72, "no option found to get")
        return out

    def cmd_set_parameter(self, db, body, conn):
        if db != "admin":
            raise CommandError(13, "setParameter may only be run against the admin database.")
        was = {}
        for k, v in body.items():
            if k in ("setParameter",) or k.startswith("$") or k in GENERIC_FIELDS:
                continue
            if k == "ttlMonitorSleepSecs":
                if not _is_number(v) or v < 1:
                    raise CommandError(2, "ttlMonitorSleepSecs must be >= 1")
                was[k] = self.ttl_interval
                self.ttl_interval = int(v)
                self.ttl_wakeup.set()
            elif k == "ttlMonitorEnabled":
                was[k] = self.ttl_enabled
                self.ttl_enabled = bool(v)
            else:
                raise CommandError(2, "Attempted to set unknown parameter '%s' (the stand-in "
                                      "knows ttlMonitorSleepSecs and ttlMonitorEnabled)" % k)
        if not was:
            raise CommandError(2, "no option found to set, use help:true to see options ")
        if len(was) == 1:
            return {"was": next(iter(was.values()))}
        return {"was": was}

    def cmd_server_status(self, db, body, conn):
        up = time.monotonic() - self.started
        return {"host": self.me, "version": SERVER_VERSION, "process": "mongod",
                "pid": Int64(os.getpid()), "uptime": float(int(up)),
                "uptimeMillis": Int64(int(up * 1000)), "localTime": utcnow_ms(),
                "connections": {"current": len(self.conns), "available": 100000,
                                "totalCreated": self.total_conns},
                "repl": {"setName": self.set_name, "isWritablePrimary": True,
                         "primary": self.me, "me": self.me, "hosts": [self.me]}}

    def cmd_db_stats(self, db, body, conn):
        names = self.collection_names(db)
        objects = sum(len(self.coll(db, n)._store._documents) for n in names)
        return {"db": db, "collections": len(names), "views": 0, "objects": objects,
                "indexes": sum(len(_meta(self.coll(db, n)._store)["indexes"]) for n in names)}

    # -- commands: CRUD ------------------------------------------------------------------

    def cmd_insert(self, db, body, conn):
        name = self.collection_name(body, "insert")
        docs = body.get("documents")
        if not isinstance(docs, list):
            raise CommandError(9, "BSON field 'insert.documents' is missing but a required "
                                  "field")
        if len(docs) > MAX_WRITE_BATCH:
            raise CommandError(2, "Write batch sizes must be between 1 and %d. Got %d "
                                  "operations." % (MAX_WRITE_BATCH, len(docs)))
        ordered = body.get("ordered", True)
        n = 0
        errors = []
        for i, doc in enumerate(docs):
            try:
                self.do_insert(db, name, doc)
                n += 1
            except CommandError:
                raise
            except Exception as err:  # noqa: BLE001
                errors.append(write_error(i, err))
                if ordered:
                    break
        reply = {"n": n}
        if errors:
            reply["writeErrors"] = errors
        return reply

    def cmd_update(self, db, body, conn):
        name = self.collection_name(body, "update")
        updates = body.get("updates")
        if not isinstance(updates, list):
            raise CommandError(9, "BSON field 'update.updates' is missing but a required field")
        ordered = body.get("ordered", True)
        n = n_mod = 0
        upserted = []
        errors = []
        for i, spec in enumerate(updates):
            try:
                if not isinstance(spec, dict) or "q" not in spec or "u" not in spec:
                    raise CommandError(9, "BSON field 'update.updates.q'/'u' is missing but a "
                                          "required field")
                dn, dm, up_id, _, _ = self.do_update(
                    db, name, spec["q"], spec["u"], bool(spec.get("upsert")),
                    bool(spec.get("multi")), spec.get("arrayFilters"))
                n += dn
                n_mod += dm
                if up_id is not None:
                    upserted.append({"index": i, "_id": up_id})
            except CommandError as err:
                errors.append({"index": i, "code": err.code, "codeName":
                               CODE_NAMES.get(err.code, ""), "errmsg": err.msg})
                if ordered:
                    break
            except Exception as err:  # noqa: BLE001
                errors.append(write_error(i, err))
                if ordered:
                    break
        reply = {"n": n, "nModified": n_mod}
        if upserted:
            reply["upserted"] = upserted
        if errors:
            reply["writeErrors"] = errors
        return reply

    def cmd_delete(self, db, body, conn):
        name = self.collection_name(body, "delete")
        deletes = body.get("deletes")
        if not isinstance(deletes, list):
            raise CommandError(9, "BSON field 'delete.deletes' is missing but a required field")
        ordered = body.get("ordered", True)
        n = 0
        errors = []
        for i, spec in enumerate(deletes):
            try:
                if not isinstance(spec, dict) or "q" not in spec or "limit" not in spec:
                    raise CommandError(9, "BSON field 'delete.deletes.q'/'limit' is missing "
                                          "but a required field")
                limit = spec["limit"]
                if limit not in (0, 1):
                    raise CommandError(9, "The limit field in delete objects must be 0 or 1. "
                                          "Got %s" % limit)
                n += len(self.do_delete(db, name, spec["q"], limit))
            except CommandError as err:
                errors.append({"index": i, "code": err.code,
                               "codeName": CODE_NAMES.get(err.code, ""), "errmsg": err.msg})
                if ordered:
                    break
            except Exception as err:  # noqa: BLE001
                errors.append(write_error(i, err))
                if ordered:
                    break
        reply = {"n": n}
        if errors:
            reply["writeErrors"] = errors
        return reply

    def cmd_find_and_modify(self, db, body, conn):
        name = self.collection_name(body, next(iter(body)))
        q = body.get("query") or {}
        sort = body.get("sort") or {}
        fields = body.get("fields")
        remove = bool(body.get("remove"))
        update = body.get("update")
        if remove == (update is not None):
            raise CommandError(9, "Either an update or remove=true must be specified")
        c = self.coll(db, name)
        value = None
        last = {"n": 0}
        if remove:
            docs = self.do_delete(db, name, q, 1, sort=sort)
            if docs:
                value = docs[0]
                last["n"] = 1
        else:
            if sort:
                docs = self.sorted_docs(c, q, sort)
                if docs:
                    q = {"_id": docs[0]["_id"]}
                elif not body.get("upsert"):
                    q = {"$expr": False}
            n, _, up_id, before, after = self.do_update(
                db, name, q, update, bool(body.get("upsert")), False,
                body.get("arrayFilters"), want=True)
            last["n"] = n
            last["updatedExisting"] = up_id is None and n > 0
            if up_id is not None:
                last["upserted"] = up_id
            value = after if body.get("new") else before
        if value is not None and fields:
            value = c._copy_only_fields(value, dict(fields), dict)
        return {"lastErrorObject": last, "value": value}

    def cmd_find(self, db, body, conn):
        name = self.collection_name(body, "find")
        filt = body.get("filter") or {}
        if not isinstance(filt, dict):
            raise CommandError(14, "BSON field 'find.filter' is the wrong type, expected type "
                                   "'object'")
        projection = body.get("projection")
        sort = body.get("sort") or {}
        skip = int(body.get("skip") or 0)
        limit = int(body.get("limit") or 0)
        batch_size = body.get("batchSize")
        single = bool(body.get("singleBatch")) or limit < 0
        if skip < 0:
            raise CommandError(2, "skip value must be non-negative, but received: %d" % skip)
        c = self.coll(db, name)
        if not c._store.is_created:
            mm_filter.filter_applies(filt, {})
            docs = []
        else:
            docs = self.sorted_docs(c, filt, sort) if sort else list(c._iter_documents(filt))
        docs = docs[skip:]
        if limit:
            docs = docs[:abs(limit)]
        if projection:
            docs = [c._copy_only_fields(d, dict(projection), dict) for d in docs]
        else:
            docs = [copy.deepcopy(d) for d in docs]
        bs = None if batch_size is None else int(batch_size)
        if single and bs is None:
            bs = 0
        return self.cursor_reply(self.ns(db, name), docs, bs, single_batch=single)

    def cmd_get_more(self, db, body, conn):
        cid = body.get("getMore")
        if not isinstance(cid, int):
            raise CommandError(14, "BSON field 'getMore.getMore' is the wrong type, expected "
                                   "type 'long'")
        cur = self.cursors.get(int(cid))
        if cur is None:
            raise CommandError(43, "cursor id %d not found" % cid)
        batch_size = body.get("batchSize")
        if isinstance(cur, ChangeStreamCursor):
            max_ms = body.get("maxTimeMS")
            wait = 1.0 if max_ms is None else float(max_ms) / 1000.0
            return self.change_stream_get_more(cur, batch_size, wait)
        limit = len(cur.docs) if batch_size is None or batch_size <= 0 else int(batch_size)
        n = batch_fits(cur.docs, cur.pos, limit)
        batch = cur.docs[cur.pos:cur.pos + n]
        cur.pos += len(batch)
        cid_out = cur.id
        if cur.pos >= len(cur.docs):
            self.cursors.pop(cur.id, None)
            cid_out = 0
        return {"cursor": {"nextBatch": batch, "id": Int64(cid_out), "ns": cur.ns}}

    def cmd_kill_cursors(self, db, body, conn):
        killed, not_found = [], []
        for cid in body.get("cursors") or []:
            cur = self.cursors.pop(int(cid), None)
            if cur is None:
                not_found.append(Int64(cid))
            else:
                cur.killed = True
                killed.append(Int64(cid))
        self.changed.set()
        self.changed = asyncio.Event()
        return {"cursorsKilled": killed, "cursorsNotFound": not_found, "cursorsAlive": [],
                "cursorsUnknown": []}

    def cmd_count(self, db, body, conn):
        name = self.collection_name(body, "count")
        q = body.get("query") or {}
        c = self.coll(db, name)
        if not c._store.is_created:
            return {"n": 0}
        if q:
            n = sum(1 for _ in c._iter_documents(q))
        else:
            n = len(c._store._documents)
        skip = int(body.get("skip") or 0)
        limit = int(body.get("limit") or 0)
        n = max(0, n - skip)
        if limit:
            n = min(n, abs(limit))
        return {"n": n}

    def cmd_distinct(self, db, body, conn):
        name = self.collection_name(body, "distinct")
        key = body.get("key")
        if not isinstance(key, str):
            raise CommandError(14, "BSON field 'distinct.key' is the wrong type")
        c = self.coll(db, name)
        if not c._store.is_created:
            return {"values": []}
        return {"values": c.distinct(key, body.get("query") or {})}

    # -- aggregate -----------------------------------------------------------------------

    def cmd_aggregate(self, db, body, conn):
        target = body.get("aggregate")
        pipeline = body.get("pipeline")
        if not isinstance(pipeline, list):
            raise CommandError(14, "'pipeline' option must be specified as an array")
        cursor_opts = body.get("cursor")
        if cursor_opts is None and not body.get("explain"):
            raise CommandError(9, "The 'cursor' option is required, except for aggregate with "
                                  "the explain argument")
        if body.get("explain"):
            raise CommandError(238, "explain is not supported by the MongoDB stand-in")
        batch_size = (cursor_opts or {}).get("batchSize")
        if pipeline and isinstance(pipeline[0], dict) and "$changeStream" in pipeline[0]:
            return self.open_change_stream(db, target, pipeline, batch_size)
        for stage in pipeline:
            if not isinstance(stage, dict) or len(stage) != 1:
                raise CommandError(40323, "A pipeline stage specification object must contain "
                                          "exactly one field.")
            op = next(iter(stage))
            if op == "$changeStream":
                raise CommandError(40602, "$changeStream is only valid as the first stage in a "
                                          "pipeline.")
            if op in ("$out", "$merge"):
                continue
            if op in MONGODB_STAGES_NOT_IN_STANDIN or \
                    (op in mm_agg._PIPELINE_HANDLERS and mm_agg._PIPELINE_HANDLERS[op] is None):
                raise CommandError(238, "the %s stage is valid MongoDB but not supported by the "
                                        "MongoDB stand-in (mongomock)" % op)
            if op not in mm_agg._PIPELINE_HANDLERS:
                raise CommandError(40324, "Unrecognized pipeline stage name: '%s'" % op)
        if target == 1 or not isinstance(target, str):
            raise CommandError(238, "collection-less aggregate ({aggregate: 1}) is only "
                                    "supported with $changeStream by the MongoDB stand-in")
        out_stage = None
        if pipeline and next(iter(pipeline[-1])) in ("$out", "$merge"):
            out_stage = pipeline[-1]
            pipeline = pipeline[:-1]
        for stage in pipeline:
            if next(iter(stage)) in ("$out", "$merge"):
                raise CommandError(40601, "%s can only be the final stage in the pipeline"
                                   % next(iter(stage)))
        c = self.coll(db, target)
        if c._store.is_created:
            # Only documents a leading $match's date range can keep are copied and
            # matched: MongoDB reads such a range from an index, and copying and
            # matching the whole collection made a read of the last minutes cost
            # as much as a read of the whole day. The $match itself still runs.
            keep = _date_range_prefilter(pipeline[0]["$match"]) \
                if pipeline and "$match" in pipeline[0] else None
            docs = [copy.deepcopy(d) for d in c._store._documents.values()
                    if keep is None or keep(d)]
        else:
            docs = []
        result = list(mm_agg.process_pipeline(docs, c.database, pipeline, None))
        if out_stage is not None:
            self.write_out_stage(db, out_stage, result)
            result = []
        ns = self.ns(db, target)
        return self.cursor_reply(ns, result, None if batch_size is None else int(batch_size))

    def write_out_stage(self, db, stage, docs):
        op, spec = next(iter(stage.items()))
        if op == "$out":
            if isinstance(spec, dict):
                out_db, out_coll = spec.get("db", db), spec.get("coll")
            else:
                out_db, out_coll = db, spec
            if self.exists(out_db, out_coll):
                st = self.coll(out_db, out_coll)._store
                keep = _meta(st)
                self.do_drop(out_db, out_coll, emit=False)
                self.ensure_created(out_db, out_coll)
                _meta(st)["indexes"] = keep["indexes"]
                _meta(st)["options"] = keep["options"]
            for d in docs:
                self.do_insert(out_db, out_coll, d)
            return
        # $merge
        if isinstance(spec, str):
            spec = {"into": spec}
        into = spec.get("into")
        if isinstance(into, dict):
            out_db, out_coll = into.get("db", db), into.get("coll")
        else:
            out_db, out_coll = db, into
        on = spec.get("on", "_id")
        on = [on] if isinstance(on, str) else list(on)
        when_matched = spec.get("whenMatched", "merge")
        when_not = spec.get("whenNotMatched", "insert")
        if not isinstance(when_matched, str):
            raise CommandError(238, "$merge with a whenMatched pipeline is not supported by "
                                    "the MongoDB stand-in")
        for d in docs:
            q = {}
            for f in on:
                try:
                    q[f] = mm_helpers.get_value_by_dot(d, f)
                except KeyError as err:
                    raise CommandError(51132, "$merge write error: 'on' field '%s' cannot be "
                                              "missing, null or an array" % f) from err
            c = self.coll(out_db, out_coll)
            existing = next(iter(c._iter_documents(q)), None) if c._store.is_created else None
            if existing is None:
                if when_not == "insert":
                    self.do_insert(out_db, out_coll, copy.deepcopy(d))
                elif when_not == "fail":
                    raise CommandError(13113, "$merge could not find a matching document in "
                                              "the target collection for at least one document "
                                              "in the source collection")
                continue
            if when_matched == "keepExisting":
                continue
            if when_matched == "fail":
                raise DupKey(self.ns(out_db, out_coll), "_id_", {"_id": 1},
                             {"_id": existing["_id"]})
            new = copy.deepcopy(d)
            new.pop("_id", None)
            key_q = {"_id": existing["_id"]}
            if when_matched == "replace":
                self.do_update(out_db, out_coll, key_q, new)
            elif when_matched == "merge":
                if new:
                    self.do_update(out_db, out_coll, key_q, {"$set": new})
            else:
                raise CommandError(2, "unsupported whenMatched: %s" % when_matched)

    # -- change streams ------------------------------------------------------------------

    def open_change_stream(self, db, target, pipeline, batch_size):
        opts = pipeline[0]["$changeStream"]
        if not isinstance(opts, dict):
            raise CommandError(14, "$changeStream stage expects an object")
        cluster = bool(opts.get("allChangesForCluster"))
        if cluster and (db != "admin" or target != 1):
            raise CommandError(2, "allChangesForCluster requires {aggregate: 1} on admin")
        if target == 1:
            coll = None
            ns = "%s.$cmd.aggregate" % db
        elif isinstance(target, str):
            coll = target
            ns = self.ns(db, coll)
            if self.exists(db, coll) and \
                    _meta(self.coll(db, coll)._store)["options"].get("timeseries"):
                raise CommandError(166, "Namespace %s is a timeseries collection; change "
                                        "streams are not supported on it" % ns)
        else:
            raise CommandError(73, "Invalid aggregate target %r" % (target,))
        if db == "admin" and not cluster:
            raise CommandError(73, "$changeStream may not be opened on the internal admin "
                                   "database")
        full_doc = opts.get("fullDocument", "default")
        if full_doc not in ("default", "updateLookup", "whenAvailable", "required"):
            raise CommandError(2, "unknown fullDocument mode: %s" % full_doc)
        before = opts.get("fullDocumentBeforeChange", "off")
        if before not in ("off", "whenAvailable", "required"):
            raise CommandError(2, "unknown fullDocumentBeforeChange mode: %s" % before)
        given = [k for k in ("resumeAfter", "startAfter", "startAtOperationTime") if k in opts]
        if len(given) > 1:
            raise CommandError(40674, "Only one type of resume option is allowed, but multiple "
                                      "were found.")
        pos = (self.last_seq, 2)
        if "resumeAfter" in opts or "startAfter" in opts:
            key = given[0]
            _, seq, sub = parse_token(opts[key])
            if sub == 1 and key == "resumeAfter":
                raise CommandError(260, "Attempting to resume a change stream using "
                                        "'resumeAfter' is not allowed from an invalidate "
                                        "notification.")
            if seq < self.history_lost_before():
                raise CommandError(286, "Resume of change stream was not possible, as the "
                                        "resume point may no longer be in the oplog.")
            pos = (seq, 2 if sub == 1 else sub)
        elif "startAtOperationTime" in opts:
            ts = opts["startAtOperationTime"]
            if not isinstance(ts, Timestamp):
                raise CommandError(14, "startAtOperationTime must be a Timestamp")
            lost = self.history_lost_before()
            if lost == self.base_seq:
                is_lost = ts < self.start_ts
            else:
                idx = self.oplog_index(lost)
                if idx < len(self.oplog) and self.oplog[idx].seq == lost:
                    is_lost = ts <= self.oplog[idx].ts
                else:
                    is_lost = ts <= self.trimmed_ts
            if is_lost:
                raise CommandError(286, "Resume of change stream was not possible, as the "
                                        "resume point may no longer be in the oplog.")
            keys = [e.ts for e in self.oplog]
            idx = bisect.bisect_left(keys, ts)
            prev_seq = self.oplog[idx - 1].seq if idx > 0 else (
                self.oplog[0].seq - 1 if self.oplog else self.last_seq)
            pos = (prev_seq, 2)
        stages = pipeline[1:]
        allowed = {"$match", "$project", "$addFields", "$set", "$unset", "$replaceRoot",
                   "$replaceWith", "$redact"}
        for st in stages:
            op = next(iter(st)) if isinstance(st, dict) and st else None
            if op not in allowed:
                raise CommandError(
                    ErrorCodes_IllegalOperation,
                    "%s is not permitted in a $changeStream pipeline" % op)
        cur = ChangeStreamCursor(self.new_cursor_id(), ns, db, coll, cluster, full_doc, before,
                                 stages, pos)
        bs = 101 if batch_size is None else int(batch_size)
        events, pbrt = self.change_stream_scan(cur, bs)
        self.cursors[cur.id] = cur
        cid = cur.id
        if cur.closed:
            self.cursors.pop(cur.id, None)
            cid = 0
        return {"cursor": {"firstBatch": events, "postBatchResumeToken": pbrt,
                           "id": Int64(cid), "ns": ns}}

    async def change_stream_get_more(self, cur, batch_size, wait):
        bs = 101 if batch_size is None or batch_size <= 0 else int(batch_size)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            changed = self.changed
            events, pbrt = self.change_stream_scan(cur, bs)
            remaining = deadline - loop.time()
            if events or cur.closed or cur.killed or remaining <= 0 or self.shutdown.is_set():
                break
            try:
                await asyncio.wait_for(changed.wait(), remaining)
            except asyncio.TimeoutError:
                pass
        if cur.killed:
            raise CommandError(237, "cursor id %d was killed" % cur.id)
        cid = cur.id
        if cur.closed:
            self.cursors.pop(cur.id, None)
            cid = 0
        return {"cursor": {"nextBatch": events, "postBatchResumeToken": pbrt,
                           "id": Int64(cid), "ns": cur.ns}}

    def relevant(self, cur, ev):
        if ev.op not in ("insert", "update", "replace", "delete", "drop", "dropDatabase"):
            return False
        if cur.cluster:
            return ev.db not in ("admin", "config", "local")
        if ev.db != cur.db:
            return False
        if cur.coll is None:
            return ev.coll is None or not ev.coll.startswith("system.")
        return ev.coll == cur.coll

    def invalidates(self, cur, ev):
        if cur.cluster:
            return False
        if cur.coll is None:
            return ev.op == "dropDatabase"
        return ev.op == "drop" and ev.coll == cur.coll

    def change_stream_scan(self, cur, batch_size):
        """Collect up to batch_size events after cur.pos. Returns (events, pbrt).

        cur.pos = (seq, sub): everything up to that point is consumed; sub 0 means the
        event itself was returned (its invalidate may be pending), 1 the invalidate was
        returned, 2 everything at that seq was consumed."""
        out = []
        if cur.closed:
            return out, cur.last_token
        if cur.pos[0] < self.history_lost_before():
            raise CommandError(286, "Resume of change stream was not possible, as the resume "
                                    "point may no longer be in the oplog.")
        idx = self.oplog_index(cur.pos[0])
        n = len(self.oplog)
        while idx < n:
            ev = self.oplog[idx]
            idx += 1
            pseq, psub = cur.pos
            if ev.seq < pseq or (ev.seq == pseq and psub >= 1):
                continue
            if not self.relevant(cur, ev):
                cur.pos = (ev.seq, 2)
                continue
            if ev.seq > pseq:
                doc = self.event_doc(cur, ev)
                cur.pos = (ev.seq, 0)
                if self.apply_stages(cur, doc):
                    out.append(doc)
                    if len(out) >= batch_size:
                        cur.last_token = doc["_id"]
                        return out, doc["_id"]
            if self.invalidates(cur, ev):
                inv = {"_id": make_token(ev.ts, ev.seq, 1), "operationType": "invalidate",
                       "clusterTime": ev.ts, "wallTime": ev.wall}
                cur.pos = (ev.seq, 1)
                cur.closed = True
                cur.last_token = inv["_id"]
                out.append(inv)
                return out, inv["_id"]
            cur.pos = (ev.seq, 2)
        # Reached the end of the oplog: a high-water mark that advances with cluster time.
        cur.pos = (max(cur.pos[0], self.last_seq), 2)
        cur.last_token = make_token(self.next_ts(), cur.pos[0], 2)
        return out, cur.last_token

    def event_doc(self, cur, ev):
        doc = {"_id": make_token(ev.ts, ev.seq, 0), "operationType": ev.op,
               "clusterTime": ev.ts, "wallTime": ev.wall}
        if ev.op in ("insert", "replace"):
            doc["fullDocument"] = copy.deepcopy(ev.full)
        elif ev.op == "update":
            if cur.full_doc == "updateLookup":
                doc["fullDocument"] = self.lookup(ev)
            elif cur.full_doc in ("whenAvailable", "required"):
                if ev.post is None and cur.full_doc == "required":
                    raise CommandError(280, "Change stream was configured to require a "
                                            "post-image for all update, delete and replace "
                                            "events, but the post-image was not found for "
                                            "event: %s" % render_key(doc["_id"]))
                doc["fullDocument"] = copy.deepcopy(ev.post)
        if ev.op == "dropDatabase":
            doc["ns"] = {"db": ev.db}
        else:
            doc["ns"] = {"db": ev.db, "coll": ev.coll}
        if ev.op in ("insert", "update", "replace", "delete"):
            doc["documentKey"] = {"_id": ev.doc_id}
        if ev.op == "update":
            doc["updateDescription"] = copy.deepcopy(ev.update_desc)
        if cur.before_change != "off" and ev.op in ("update", "replace", "delete"):
            if ev.pre is None and cur.before_change == "required":
                raise CommandError(280, "Change stream was configured to require a pre-image "
                                        "for all update, delete and replace events, but the "
                                        "pre-image was not found")
            doc["fullDocumentBeforeChange"] = copy.deepcopy(ev.pre)
        return doc

    def lookup(self, ev):
        if not self.exists(ev.db, ev.coll):
            return None
        doc = self.coll(ev.db, ev.coll)._store._documents.get(id_store_key(ev.doc_id))
        return copy.deepcopy(doc) if doc is not None else None

    def apply_stages(self, cur, doc):
        if not cur.stages:
            return True
        res = list(mm_agg.process_pipeline([doc], self.client[cur.db], cur.stages, None))
        if not res:
            return False
        new = dict(res[0])
        if "_id" not in new or not strict_eq(new["_id"], doc["_id"]):
            raise CommandError(280, "Encountered an event whose _id field, which contains the "
                                    "resume token, was modified by the pipeline. Modifying the "
                                    "_id field of an event makes it impossible to resume the "
                                    "stream from that point. Only transformations that retain "
                                    "the unmodified _id field are allowed.")
        doc.clear()
        doc.update(new)
        return True

    # -- DDL -----------------------------------------------------------------------------

    def cmd_create(self, db, body, conn):
        name = self.collection_name(body, "create")
        if "viewOn" in body:
            raise CommandError(238, "views are not supported by the MongoDB stand-in")
        options = {}
        ts = body.get("timeseries")
        if ts is not None:
            if not isinstance(ts, dict) or not isinstance(ts.get("timeField"), str):
                raise CommandError(2, "'timeseries' option requires a string 'timeField'")
            tso = {"timeField": ts["timeField"]}
            if "metaField" in ts:
                tso["metaField"] = ts["metaField"]
            gran = ts.get("granularity", "seconds")
            if "bucketMaxSpanSeconds" in ts:
                tso["bucketRoundingSeconds"] = ts.get("bucketRoundingSeconds",
                                                      ts["bucketMaxSpanSeconds"])
                tso["bucketMaxSpanSeconds"] = ts["bucketMaxSpanSeconds"]
            else:
                if gran not in ("seconds", "minutes", "hours"):
                    raise CommandError(2, "Invalid timeseries granularity: %s" % gran)
                tso["granularity"] = gran
                tso["bucketMaxSpanSeconds"] = {"seconds": 3600, "minutes": 86400,
                                               "hours": 2592000}[gran]
            options["timeseries"] = tso
        for k in ("expireAfterSeconds", "capped", "size", "max", "validator",
                  "validationLevel", "validationAction", "changeStreamPreAndPostImages",
                  "clusteredIndex", "collation", "storageEngine", "indexOptionDefaults"):
            if k in body:
                options[k] = body[k]
        if "expireAfterSeconds" in options and not ts and "clusteredIndex" not in options:
            raise CommandError(72, "'expireAfterSeconds' is only supported on time-series "
                                   "and clustered collections")
        if self.exists(db, name):
            # MongoDB 7.0+: success when the options are identical, else NamespaceExists.
            if strict_eq(_meta(self.coll(db, name)._store)["options"], options):
                return {}
            raise CommandError(48, "Collection %s already exists with different options"
                               % self.ns(db, name))
        c = self.ensure_created(db, name)
        meta = _meta(c._store)
        meta["options"] = options
        if ts is not None:
            meta["indexes"].pop("_id_", None)
        return {}

    def cmd_coll_mod(self, db, body, conn):
        name = self.collection_name(body, "collMod")
        if not self.exists(db, name):
            raise CommandError(26, "ns does not exist: %s" % self.ns(db, name))
        meta = _meta(self.coll(db, name)._store)
        reply = {}
        if "index" in body:
            spec = body["index"]
            idx = self.find_index(meta, spec.get("name") or spec.get("keyPattern"))
            if idx is None:
                raise CommandError(27, "cannot find index %r for ns %s" % (
                    spec.get("name") or spec.get("keyPattern"), self.ns(db, name)))
            if "expireAfterSeconds" in spec:
                reply["expireAfterSeconds_old"] = idx.get("expireAfterSeconds")
                idx["expireAfterSeconds"] = spec["expireAfterSeconds"]
                reply["expireAfterSeconds_new"] = spec["expireAfterSeconds"]
            if "hidden" in spec:
                idx["hidden"] = bool(spec["hidden"])
        for k in ("expireAfterSeconds", "changeStreamPreAndPostImages", "validator",
                  "validationLevel", "validationAction"):
            if k in body:
                if body[k] == "off" and k == "expireAfterSeconds":
                    meta["options"].pop(k, None)
                else:
                    meta["options"][k] = body[k]
        return reply

    def find_index(self, meta, name_or_key):
        if isinstance(name_or_key, str):
            return meta["indexes"].get(name_or_key)
        if isinstance(name_or_key, dict):
            for spec in meta["indexes"].values():
                if strict_eq(spec["key"], name_or_key):
                    return spec
        return None

    def cmd_create_indexes(self, db, body, conn):
        name = self.collection_name(body, "createIndexes")
        indexes = body.get("indexes")
        if not isinstance(indexes, list) or not indexes:
            raise CommandError(2, "Must specify at least one index to create")
        created_auto = not self.exists(db, name)
        c = self.ensure_created(db, name)
        st = c._store
        meta = _meta(st)
        before = len(meta["indexes"])
        notes = None
        for spec in indexes:
            if not isinstance(spec, dict) or not isinstance(spec.get("key"), dict) \
                    or not spec["key"]:
                raise CommandError(2, "The 'key' field is a required property of an index "
                                      "specification")
            iname = spec.get("name")
            if not isinstance(iname, str) or not iname:
                raise CommandError(9, "The 'name' field is a required property of an index "
                                      "specification")
            for k, v in spec["key"].items():
                if isinstance(v, str) and v not in ("text", "2d", "2dsphere", "hashed"):
                    raise CommandError(67, "Unknown index plugin '%s'" % v)
            new = {"v": 2, "key": dict(spec["key"]), "name": iname}
            for opt in ("unique", "sparse", "expireAfterSeconds", "partialFilterExpression",
                        "hidden", "collation", "background"):
                if opt in spec:
                    new[opt] = spec[opt]
            if new.get("unique") is False:
                new.pop("unique")
            existing = meta["indexes"].get(iname)
            if existing is not None:
                if _index_equiv(existing, new):
                    notes = "all indexes already exist"
                    continue
                if strict_eq(existing["key"], new["key"]):
                    raise CommandError(85, "An existing index has the same name as the "
                                           "requested index. When index names are not "
                                           "specified, they are auto generated and can cause "
                                           "conflicts. Please refer to our documentation. "
                                           "Requested index: %s, existing index: %s"
                                       % (render_key(new), render_key(existing)))
                raise CommandError(86, "An existing index has the same name as the requested "
                                       "index. Requested index: %s, existing index: %s"
                                   % (render_key(new), render_key(existing)))
            same_key = self.find_index(meta, new["key"])
            if same_key is not None and "partialFilterExpression" not in new:
                if _index_equiv(same_key, dict(new, name=same_key["name"])):
                    notes = "all indexes already exist"
                    continue
                raise CommandError(85, "An equivalent index already exists with a different "
                                       "name and options. Requested index: %s, existing index: "
                                       "%s" % (render_key(new), render_key(same_key)))
            if new.get("unique"):
                table = {}
                for doc in st._documents.values():
                    indexed, key, values = index_key_of(doc, new)
                    if not indexed:
                        continue
                    if key in table:
                        raise DupKey(self.ns(db, name), iname, dict(new["key"]), values)
                    table[key] = {id_store_key(doc["_id"])}
                meta["uniq"][iname] = table
            meta["indexes"][iname] = new
        reply = {"numIndexesBefore": before, "numIndexesAfter": len(meta["indexes"]),
                 "createdCollectionAutomatically": created_auto}
        if notes and before == len(meta["indexes"]):
            reply["note"] = notes
        return reply

    def cmd_list_indexes(self, db, body, conn):
        name = self.collection_name(body, "listIndexes")
        if not self.exists(db, name):
            raise CommandError(26, "ns does not exist: %s" % self.ns(db, name))
        meta = _meta(self.coll(db, name)._store)
        docs = [copy.deepcopy(s) for s in meta["indexes"].values()]
        bs = (body.get("cursor") or {}).get("batchSize")
        return self.cursor_reply(self.ns(db, name), docs, None if bs is None else int(bs))

    def cmd_drop_indexes(self, db, body, conn):
        name = self.collection_name(body, next(iter(body)))
        if not self.exists(db, name):
            raise CommandError(26, "ns not found %s" % self.ns(db, name))
        meta = _meta(self.coll(db, name)._store)
        which = body.get("index")
        before = len(meta["indexes"])
        if which == "*":
            names = [n for n in meta["indexes"] if n != "_id_"]
        elif isinstance(which, list):
            names = which
        else:
            spec = self.find_index(meta, which)
            if spec is None:
                raise CommandError(27, "index not found with name [%s]" % (which,))
            names = [spec["name"]]
        for n in names:
            if n == "_id_":
                raise CommandError(72, "cannot drop _id index")
            if n not in meta["indexes"]:
                raise CommandError(27, "index not found with name [%s]" % n)
        for n in names:
            meta["indexes"].pop(n, None)
            meta["uniq"].pop(n, None)
        return {"nIndexesWas": before}

    def cmd_list_collections(self, db, body, conn):
        filt = body.get("filter") or {}
        name_only = bool(body.get("nameOnly"))
        out = []
        for name in self.collection_names(db):
            st = self.coll(db, name)._store
            meta = _meta(st)
            opts = copy.deepcopy(meta["options"])
            ctype = "timeseries" if "timeseries" in opts else "collection"
            entry = {"name": name, "type": ctype}
            if not name_only:
                entry["options"] = opts
                entry["info"] = {"readOnly": False}
                if ctype == "collection":
                    entry["info"]["uuid"] = meta["uuid"]
                    entry["idIndex"] = {"v": 2, "key": {"_id": 1}, "name": "_id_"}
            if filt and not mm_filter.filter_applies(filt, entry):
                continue
            out.append(entry)
        bs = (body.get("cursor") or {}).get("batchSize")
        return self.cursor_reply("%s.$cmd.listCollections" % db, out,
                                 None if bs is None else int(bs))

    def cmd_list_databases(self, db, body, conn):
        if db != "admin":
            raise CommandError(13, "listDatabases may only be run against the admin database.")
        names = set(self.client._store.list_created_database_names())
        names.update(("admin", "config", "local"))
        dbs = []
        total = 0
        for name in sorted(names):
            size = 0
            if name in self.client._store._databases:
                for cn in self.collection_names(name):
                    size += 4096 * (1 + len(self.coll(name, cn)._store._documents) // 64)
            size = size or 8192
            total += size
            entry = {"name": name, "sizeOnDisk": Int64(size), "empty": False}
            if body.get("filter") and not mm_filter.filter_applies(body["filter"], entry):
                continue
            dbs.append({"name": name} if body.get("nameOnly") else entry)
        reply = {"databases": dbs}
        if not body.get("nameOnly"):
            reply["totalSize"] = Int64(total)
            reply["totalSizeMb"] = Int64(total // (1024 * 1024))
        return reply

    def cmd_drop(self, db, body, conn):
        name = self.collection_name(body, "drop")
        n = self.do_drop(db, name)
        if n is None:
            return {}  # MongoDB 7.0+: dropping a missing collection succeeds
        return {"nIndexesWas": n, "ns": self.ns(db, name)}

    def cmd_drop_database(self, db, body, conn):
        for name in self.collection_names(db):
            self.do_drop(db, name)
        self.record(Event("dropDatabase", db, None))
        self.colls = {k: v for k, v in self.colls.items() if k[0] != db}
        return {"dropped": db}

    # -- TTL -----------------------------------------------------------------------------

    async def ttl_monitor(self):
        while not self.shutdown.is_set():
            self.ttl_wakeup.clear()
            try:
                await asyncio.wait_for(self.ttl_wakeup.wait(), self.ttl_interval)
                continue  # interval changed: restart the sleep with the new value
            except asyncio.TimeoutError:
                pass
            if self.ttl_enabled:
                try:
                    self.ttl_pass()
                except Exception:  # noqa: BLE001
                    log.error("TTL pass failed:\n%s", traceback.format_exc())

    def ttl_pass(self):
        now = utcnow_ms()
        for db_name in list(self.client._store._databases):
            for name in self.collection_names(db_name):
                st = self.coll(db_name, name)._store
                meta = _meta(st)
                rules = []
                for spec in meta["indexes"].values():
                    if "expireAfterSeconds" in spec and len(spec["key"]) == 1:
                        rules.append((next(iter(spec["key"])), spec["expireAfterSeconds"]))
                ts = meta["options"].get("timeseries")
                if ts and _is_number(meta["options"].get("expireAfterSeconds")):
                    rules.append((ts["timeField"], meta["options"]["expireAfterSeconds"]))
                for field, secs in rules:
                    if not _is_number(secs):
                        continue
                    cutoff = now - datetime.timedelta(seconds=secs)
                    expired = []
                    for doc in list(st._documents.values()):
                        v = doc.get(field) if "." not in field else _dot_get(doc, field)
                        vals = v if isinstance(v, list) else [v]
                        dates = [x for x in vals if isinstance(x, datetime.datetime)]
                        if dates and min(dates) <= cutoff:
                            expired.append(doc["_id"])
                    for _id in expired:
                        self.do_delete(db_name, name, {"_id": _id}, 1)


ErrorCodes_IllegalOperation = 20
CODE_NAMES[20] = "IllegalOperation"
CODE_NAMES[53] = "InvalidIdField"
CODE_NAMES[13] = "Unauthorized"
CODE_NAMES[40323] = "Location40323"
CODE_NAMES[40602] = "Location40602"
CODE_NAMES[40601] = "Location40601"
CODE_NAMES[40674] = "Location40674"

GENERIC_FIELDS = {"lsid", "$clusterTime", "txnNumber", "$readPreference", "readConcern",
                  "writeConcern", "apiVersion", "apiStrict", "apiDeprecationErrors", "comment",
                  "maxTimeMS", "bypassDocumentValidation", "$db", "autocommit",
                  "startTransaction"}


UPDATE_OPERATORS = {"$set", "$unset", "$inc", "$mul", "$min", "$max", "$push", "$addToSet",
                    "$pull", "$pullAll", "$pop", "$rename", "$setOnInsert", "$currentDate",
                    "$bit"}

MONGODB_STAGES_NOT_IN_STANDIN = {
    "$densify", "$fill", "$setWindowFields", "$unionWith", "$documents", "$search",
    "$searchMeta", "$vectorSearch", "$listSessions", "$listLocalSessions", "$collStats",
    "$indexStats", "$planCacheStats", "$currentOp", "$bucketAuto", "$geoNear", "$redact",
    "$sortByCount", "$changeStreamSplitLargeEvent", "$listSearchIndexes", "$queryStats",
    "$shardedDataDistribution", "$listSampledQueries", "$listClusterCatalog",
}

MAX_BATCH_BYTES = MAX_BSON - 64 * 1024


def batch_fits(docs, start, limit):
    """How many of docs[start:start+limit] fit in one reply (16 MB, like MongoDB)."""
    end = min(len(docs), start + limit)
    if end - start <= 1:
        return end - start
    total = 0
    for i in range(start, end):
        total += len(bson.encode(docs[i], codec_options=CODEC))
        if total > MAX_BATCH_BYTES:
            return max(1, i - start)
    return end - start


def _dot_get(doc, field):
    try:
        return mm_helpers.get_value_by_dot(doc, field)
    except (KeyError, IndexError, TypeError):
        return None


def _same_id(a, b):
    if isinstance(a, dict) or isinstance(b, dict):
        return strict_eq(a, b)
    return a == b and isinstance(a, bool) == isinstance(b, bool)


def _index_equiv(a, b):
    keys = ("key", "name", "unique", "sparse", "expireAfterSeconds", "partialFilterExpression")
    return all(strict_eq(a.get(k), b.get(k)) for k in keys)


def _check_field_names(doc):
    for k in doc:
        if not isinstance(k, str):
            raise WriteError("field names must be strings", 2)
        if k.startswith("$"):
            raise WriteError("Document can't have $ prefixed field names: %s" % k, 52)


def _upsert_base(q):
    """Equality fields of a query, as MongoDB seeds an upserted document with them."""
    out = {}
    for k, v in q.items():
        if k == "$and" and isinstance(v, list):
            for sub in v:
                if isinstance(sub, dict):
                    out.update(_upsert_base(sub))
            continue
        if k.startswith("$"):
            continue
        if isinstance(v, dict) and v and any(kk.startswith("$") for kk in v):
            if "$eq" in v:
                out[k] = v["$eq"]
            continue
        if isinstance(v, (re.Pattern, Regex)):
            continue
        out[k] = v
    return out


def update_description(before, after):
    updated, removed, truncated = {}, [], []
    _diff(before, after, "", updated, removed, truncated)
    return {"updatedFields": updated, "removedFields": removed, "truncatedArrays": truncated}


def _diff(before, after, prefix, updated, removed, truncated):
    for k, v in after.items():
        path = prefix + k
        if k not in before:
            updated[path] = copy.deepcopy(v)
            continue
        old = before[k]
        if strict_eq(old, v):
            continue
        if isinstance(old, dict) and isinstance(v, dict):
            _diff(old, v, path + ".", updated, removed, truncated)
        elif isinstance(old, list) and isinstance(v, list):
            n = min(len(old), len(v))
            if strict_eq(old[:n], v[:n]):
                if len(v) > len(old):
                    for i in range(len(old), len(v)):
                        updated["%s.%d" % (path, i)] = copy.deepcopy(v[i])
                else:
                    truncated.append({"field": path, "newSize": len(v)})
            else:
                updated[path] = copy.deepcopy(v)
        else:
            updated[path] = copy.deepcopy(v)
    for k in before:
        if k not in after:
            removed.append(prefix + k)


def classify(err):
    """(code, message) for any exception raised while running a command."""
    if isinstance(err, CommandError):
        return err.code, err.msg
    if isinstance(err, DupKey):
        return 11000, err.msg
    if isinstance(err, DuplicateKeyError):
        return 11000, "E11000 duplicate key error: %s" % err
    if isinstance(err, (WriteError, OperationFailure)):
        code = getattr(err, "code", None)
        msg = str(err)
        if not code:
            if "Unrecognized expression" in msg:
                code = 168
            elif "unknown operator" in msg or "unknown top level operator" in msg:
                code = 2
            else:
                code = 2
        return code, msg
    if isinstance(err, NotImplementedError):
        return 238, "not supported by the MongoDB stand-in (mongomock): %s" % err
    if isinstance(err, TypeError):
        return 14, "type mismatch: %s" % err
    if isinstance(err, ValueError):
        msg = str(err)
        if msg.startswith("Invalid modifier specified"):
            return 9, "Unknown modifier: %s" % msg.split(":", 1)[-1].strip()
        return 2, msg
    if isinstance(err, (KeyError, IndexError, AssertionError, AttributeError,
                        ZeroDivisionError, OverflowError)):
        return 2, "%s: %s" % (type(err).__name__, err)
    if isinstance(err, bson.errors.InvalidDocument):
        return 2, str(err)
    if isinstance(err, InvalidName):
        return 73, str(err)
    return 1, "%s: %s" % (type(err).__name__, err)


def error_reply(err):
    code, msg = classify(err)
    if code == 1:
        log.error("internal error:\n%s", traceback.format_exc())
    doc = CommandError(code, msg).to_doc()
    if isinstance(err, DupKey):
        doc["keyPattern"] = err.key_pattern
        doc["keyValue"] = err.key_value
    return doc


def write_error(index, err):
    code, msg = classify(err)
    if code == 1:
        log.error("internal error in write:\n%s", traceback.format_exc())
    entry = {"index": index, "code": code, "codeName": CODE_NAMES.get(code, ""),
             "errmsg": msg}
    if isinstance(err, DupKey):
        entry["keyPattern"] = err.key_pattern
        entry["keyValue"] = err.key_value
    return entry


def _short(body):
    s = repr({k: v for k, v in body.items() if k not in ("lsid", "$clusterTime")})
    return s if len(s) < 300 else s[:300] + "..."


# ---------------------------------------------------------------------------------------
# Wire protocol
# ---------------------------------------------------------------------------------------

class Conn:
    def __init__(self, cid):
        self.id = cid
        self.app_name = None
        self.handshaken = False


def parse_op_msg(payload):
    flags = struct.unpack_from("<I", payload, 0)[0]
    end = len(payload) - (4 if flags & 1 else 0)
    pos = 4
    body = None
    seqs = {}
    while pos < end:
        kind = payload[pos]
        pos += 1
        if kind == 0:
            size = struct.unpack_from("<i", payload, pos)[0]
            body = bson.decode(payload[pos:pos + size], CODEC)
            pos += size
        elif kind == 1:
            size = struct.unpack_from("<i", payload, pos)[0]
            sec_end = pos + size
            pos += 4
            nul = payload.index(b"\x00", pos)
            ident = payload[pos:nul].decode("utf-8")
            pos = nul + 1
            seqs.setdefault(ident, []).extend(bson.decode_all(payload[pos:sec_end], CODEC))
            pos = sec_end
        else:
            raise ValueError("unknown OP_MSG section kind %d" % kind)
    if body is None:
        raise ValueError("OP_MSG without a body section")
    for ident, docs in seqs.items():
        body[ident] = docs
    return flags, body


def parse_op_query(payload):
    pos = 4  # flags
    nul = payload.index(b"\x00", pos)
    full_name = payload[pos:nul].decode("utf-8")
    pos = nul + 1 + 8  # numberToSkip, numberToReturn
    size = struct.unpack_from("<i", payload, pos)[0]
    query = bson.decode(payload[pos:pos + size], CODEC)
    if "$query" in query:
        query = query["$query"]
    return full_name, query


def encode_reply(doc):
    try:
        return bson.encode(doc, codec_options=CODEC)
    except Exception as err:  # noqa: BLE001
        log.error("cannot encode reply: %s", err)
        return bson.encode(CommandError(1, "stand-in could not encode its reply: %s" % err)
                           .to_doc())


def op_msg_bytes(request_id, response_to, doc):
    body = encode_reply(doc)
    length = 16 + 4 + 1 + len(body)
    return struct.pack("<iiiiIB", length, request_id, response_to, OP_MSG, 0, 0) + body


def op_reply_bytes(request_id, response_to, doc):
    body = encode_reply(doc)
    length = 16 + 20 + len(body)
    return struct.pack("<iiiiiqii", length, request_id, response_to, OP_REPLY, 8, 0, 0, 1) + body


class WireProtocol(asyncio.Protocol):
    """One client connection. Requests are answered in order; commands that wait run as a
    task while later requests on the same connection queue in the buffer."""

    def __init__(self, wire):
        self.wire = wire
        self.s = wire.s
        self.buf = bytearray()
        self.busy = False
        self.closed = False
        self.task = None
        self.transport = None
        self.conn = None

    def connection_made(self, transport):
        self.transport = transport
        self.conn = Conn(next(self.s.conn_ids))
        self.s.conns.add(self.conn)
        self.s.total_conns += 1
        self.wire.protocols.add(self)

    def connection_lost(self, exc):
        self.closed = True
        self.s.conns.discard(self.conn)
        self.wire.protocols.discard(self)
        if self.task is not None:
            self.task.cancel()

    def close(self):
        if not self.closed:
            self.closed = True
            self.transport.close()

    def data_received(self, data):
        self.buf += data
        if not self.busy:
            self.process()

    def process(self):
        while not self.busy and not self.closed and len(self.buf) >= 16:
            length, req_id, _, opcode = struct.unpack_from("<iiii", self.buf, 0)
            if length < 16 or length > MAX_MESSAGE:
                log.warning("conn%d: bad message length %d, closing", self.conn.id, length)
                self.close()
                return
            if len(self.buf) < length:
                return
            payload = bytes(self.buf[16:length])
            del self.buf[:length]
            try:
                self.handle_message(req_id, opcode, payload)
            except CloseConnection:
                self.close()
            except Exception:  # noqa: BLE001
                log.error("conn%d crashed:\n%s", self.conn.id, traceback.format_exc())
                self.close()

    def handle_message(self, req_id, opcode, payload):
        if opcode == OP_MSG:
            try:
                flags, body = parse_op_msg(payload)
            except Exception as err:  # noqa: BLE001
                reply = CommandError(9, "could not parse OP_MSG: %s" % err).to_doc()
                self.send(OP_MSG, req_id, reply)
                return
            reply = self.s.dispatch(body, self.conn)
            silent = bool(flags & 2)  # moreToCome: the client wants no reply
            if asyncio.iscoroutine(reply):
                self.start(reply, OP_MSG, req_id, silent)
            elif not silent:
                self.send(OP_MSG, req_id, reply)
        elif opcode == OP_QUERY:
            try:
                full_name, query = parse_op_query(payload)
            except Exception as err:  # noqa: BLE001
                reply = CommandError(9, "could not parse OP_QUERY: %s" % err).to_doc()
                self.send(OP_REPLY, req_id, reply)
                return
            name = next(iter(query), "")
            if not full_name.endswith(".$cmd") or name not in ("hello", "isMaster",
                                                               "ismaster"):
                reply = CommandError(5739101, "OP_QUERY is no longer supported except for "
                                              "the handshake (hello/isMaster)").to_doc()
                self.send(OP_REPLY, req_id, reply)
                return
            query = dict(query)
            query["$db"] = full_name[:-len(".$cmd")]
            reply = self.s.dispatch(query, self.conn)
            if asyncio.iscoroutine(reply):
                self.start(reply, OP_REPLY, req_id, False)
            else:
                self.send(OP_REPLY, req_id, reply)
        else:
            log.warning("conn%d: unsupported opcode %d, closing", self.conn.id, opcode)
            self.close()

    def start(self, coro, kind, req_id, silent):
        self.busy = True
        self.task = asyncio.ensure_future(self.finish(coro, kind, req_id, silent))

    async def finish(self, coro, kind, req_id, silent):
        try:
            reply = await coro
        except CloseConnection:
            self.close()
            return
        except asyncio.CancelledError:
            return
        except Exception:  # noqa: BLE001
            log.error("conn%d crashed:\n%s", self.conn.id, traceback.format_exc())
            self.close()
            return
        self.task = None
        self.busy = False
        if not silent:
            self.send(kind, req_id, reply)
        self.process()

    def send(self, kind, req_id, reply):
        if self.closed:
            return
        if kind == OP_MSG:
            self.transport.write(op_msg_bytes(next(self.wire.request_ids), req_id, reply))
        else:
            self.transport.write(op_reply_bytes(next(self.wire.request_ids), req_id, reply))


class WireServer:
    def __init__(self, server):
        self.s = server
        self.request_ids = itertools.count(1)
        self.protocols = set()


VERBOSE = False


async def watch_parent(parent, stop):
    """Exit when the process that started us is gone (e.g. a killed `cargo test`)."""
    while not stop.is_set():
        await asyncio.sleep(1.0)
        if os.getppid() != parent:
            log.info("parent process %d is gone, exiting", parent)
            stop.set()


async def main_async(args):
    server = Server(args.host, args.port, args.oplog_size, args.ttl_monitor_interval,
                    args.set_name)
    wire = WireServer(server)
    loop = asyncio.get_running_loop()
    srv = await loop.create_server(lambda: WireProtocol(wire), args.host, args.port,
                                   reuse_address=True)
    port = srv.sockets[0].getsockname()[1]
    host = args.advertise_host or args.host
    server.me = "%s:%d" % (host, port)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    ttl_task = asyncio.create_task(server.ttl_monitor())
    if args.exit_with_parent:
        asyncio.create_task(watch_parent(os.getppid(), stop))
    sys.stdout.write("LISTENING %s\n" % server.me)
    sys.stdout.flush()
    log.info("MongoDB stand-in (mongomock %s) listening on %s, replica set %s, pid %d",
             mongomock.__version__, server.me, args.set_name, os.getpid())
    await stop.wait()
    log.info("shutting down")
    server.shutdown.set()
    server.changed.set()
    srv.close()
    tasks = [p.task for p in wire.protocols if p.task is not None]
    for p in list(wire.protocols):
        p.close()
    for t in tasks:
        t.cancel()
    ttl_task.cancel()
    await asyncio.gather(*tasks, ttl_task, return_exceptions=True)


def main():
    p = argparse.ArgumentParser(description="MongoDB wire-protocol stand-in (mongomock).")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--advertise-host", default=None,
                   help="host name reported in hello (default: --host)")
    p.add_argument("--set-name", default="rs0", help="replica set name (default rs0)")
    p.add_argument("--oplog-size", type=int, default=100_000,
                   help="change events kept for resuming change streams (default 100000)")
    p.add_argument("--ttl-monitor-interval", type=int, default=60,
                   help="seconds between TTL passes, like ttlMonitorSleepSecs (default 60)")
    p.add_argument("--verbose", action="store_true", help="log every command to stderr")
    p.add_argument("--exit-with-parent", action="store_true",
                   help="exit when the parent process exits (used by the Rust test fixture)")
    args = p.parse_args()
    global VERBOSE
    VERBOSE = args.verbose or os.environ.get("STANDIN_VERBOSE") == "1"
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="%(asctime)s standin %(levelname)s %(message)s")
    try:
        asyncio.run(main_async(args))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
