"""Line protocol: Telegraf's real output, escaping, value types, errors, round trips."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from collector.lineprotocol import (
    INT64_MAX,
    INT64_MIN,
    UINT64_MAX,
    LineProtocolError,
    _Scanner,
    encode,
    parse,
    parse_file,
    plain_point_count,
)
from collector.schema import Point

GOLDEN = Path(__file__).parent / "golden" / "lineprotocol"
T = 1_700_000_000_000_000_000

# What Telegraf 1.x writes for these inputs (tags sorted, as its serializer does).
TELEGRAF = "\n".join([
    "# one poll of each input; the second infiniband line is hw_counters",
    r'interface,agent_host=10.0.0.1,host=poller,ifIndex=3,ifName=swp1 ifHCInOctets=123i,ifDescr="Ethernet 1/1 \"uplink\"" 1700000000000000000',
    r'interface,agent_host=10.0.0.1,host=poller,ifIndex=4,ifName=swp2 ifAlias="to spine-1, port 7 = x",ifHCInOctets=9876543210i,ifHCOutOctets=1234567890i,ifHighSpeed=400000i,ifInDiscards=0i,ifInErrors=0i,ifOperStatus=1i,ifOutDiscards=12i,ifOutErrors=0i,ifPhysAddress="b8:59:9f:00:00:02" 1700000000000000000',
    "infiniband,device=mlx5_0,host=gpu-node-01,port=1 excessive_buffer_overrun_errors=0i,link_downed=0i,link_error_recovery=0i,local_link_integrity_errors=0i,port_rcv_data=39419891740i,port_rcv_errors=0i,port_rcv_packets=9854879125i,port_xmit_data=39453018562i,port_xmit_discards=0i,port_xmit_packets=9871524003i,port_xmit_wait=1243512i,symbol_error=0i,VL15_dropped=0i 1700000000000000000",
    "infiniband,device=mlx5_0,host=gpu-node-01,port=1 local_ack_timeout_err=0i,np_cnp_sent=1834i,np_ecn_marked_roce_packets=1834i,out_of_sequence=0i,packet_seq_err=0i,rp_cnp_handled=2210i,rp_cnp_ignored=0i 1700000000000000000",
    "",
    r'nvidia_smi,compute_mode=Default,host=gpu-node-01,index=0,name=NVIDIA\ H100\ 80GB\ HBM3,pstate=P0,uuid=GPU-5e4b2f1a-3c2d-4e8f-9a1b-7c6d5e4f3a2b clocks_current_sm=1980i,driver_version="550.54.15",fan_speed=0i,memory_total=81559i,memory_used=61234i,power_draw=612.33,temperature_gpu=61i,utilization_gpu=97i,utilization_memory=37i 1700000000000000000',
    "ethtool,driver=mlx5_core,host=gpu-node-01,interface=ens1f0np0 rx_discards_phy=0i,rx_out_of_buffer=0i,rx_prio3_pause=412i,tx_pause_storm_warning_events=0i 1700000000000000000\r",
    "snmp,agent_host=10.0.0.2,host=poller sysUpTime=18446744073709551615u,uptime_ok=true,stale=F,ratio=-1.5e-3",
    r"win_perf_counters,instance=C:\Windows,objectname=Logical\,Disk\=x Free\ Megabytes=1024i 1700000000000000000",
    r'syslog,appname=sshd message="line one\nstill one, with a \\ backslash",severity="info" 1700000000000000000',
    "  # an indented comment",
    "",
])


def typed(points: list[Point]) -> list[dict]:
    """Points as JSON-able dicts that keep the value types (1 and 1.0 and True differ)."""
    return [
        {
            "measurement": point.measurement,
            "tags": point.tags,
            "fields": {name: [type(value).__name__, value] for name, value in point.fields.items()},
            "time_ns": point.time_ns,
        }
        for point in points
    ]


def assert_golden(name: str, text: str) -> None:
    """Compare with tests/golden/lineprotocol/<name>; STRANDWATCH_UPDATE_GOLDEN=1 rewrites it."""
    path = GOLDEN / name
    if os.environ.get("STRANDWATCH_UPDATE_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"{path} is missing; run with STRANDWATCH_UPDATE_GOLDEN=1 to write it"
    assert text == path.read_text()


# --- Telegraf's output ----------------------------------------------------


def test_telegraf_output_parses_to_golden_points():
    points = parse(TELEGRAF, default_time_ns=T + 5)
    assert_golden("telegraf.json", json.dumps(typed(points), indent=1) + "\n")


def test_telegraf_output_encodes_to_golden_text_that_parses_back():
    points = parse(TELEGRAF, default_time_ns=T + 5)
    text = encode(points)
    assert_golden("telegraf.encoded.lp", text)
    assert typed(parse(text)) == typed(points)


def test_snmp_interface_line_with_quoted_string_field():
    [point] = parse(
        r'interface,agent_host=10.0.0.1,host=poller,ifIndex=3,ifName=swp1 '
        r'ifHCInOctets=123i,ifDescr="Ethernet 1/1 \"uplink\"" 1700000000000000000'
    )
    assert point == Point(
        "interface",
        {"agent_host": "10.0.0.1", "host": "poller", "ifIndex": "3", "ifName": "swp1"},
        {"ifHCInOctets": 123, "ifDescr": 'Ethernet 1/1 "uplink"'},
        T,
    )
    assert type(point.fields["ifHCInOctets"]) is int


def test_infiniband_counters_and_hw_counters_are_two_points_of_one_series():
    first, second = [point for point in parse(TELEGRAF) if point.measurement == "infiniband"]
    assert first.series_key() == second.series_key()
    assert first.time_ns == second.time_ns == T
    assert first.fields["port_xmit_data"] == 39453018562
    assert second.fields["np_cnp_sent"] == 1834


def test_nvidia_smi_line_keeps_extra_tags_and_string_driver_version():
    [point] = [point for point in parse(TELEGRAF) if point.measurement == "nvidia_smi"]
    assert point.tags == {
        "compute_mode": "Default",
        "host": "gpu-node-01",
        "index": "0",
        "name": "NVIDIA H100 80GB HBM3",
        "pstate": "P0",
        "uuid": "GPU-5e4b2f1a-3c2d-4e8f-9a1b-7c6d5e4f3a2b",
    }
    assert point.fields["driver_version"] == "550.54.15"
    assert point.fields["power_draw"] == 612.33


def test_tags_in_any_order_are_the_same_series():
    a, b = parse("m,b=2,a=1 f=1i 1\nm,a=1,b=2 f=2i 2\n")
    assert a.tags == b.tags == {"a": "1", "b": "2"}
    assert a.series_key() == b.series_key()


# --- syntax -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1i", 1), ("-9223372036854775808i", INT64_MIN), ("9223372036854775807i", INT64_MAX),
        ("0u", 0), ("18446744073709551615u", UINT64_MAX), ("007i", 7),
        ("t", True), ("T", True), ("true", True), ("True", True), ("TRUE", True),
        ("f", False), ("F", False), ("false", False), ("False", False), ("FALSE", False),
        ("1", 1.0), ("-1.5", -1.5), ("1.", 1.0), (".5", 0.5), ("-.5", -0.5), ("1e3", 1000.0),
        ("1E-3", 0.001), ("2.5e+10", 2.5e10), ("1.e2", 100.0), ("-0", -0.0),
        ('""', ""), ('"a b,c=d"', "a b,c=d"), (r'"q\"q"', 'q"q'), (r'"b\\s"', "b\\s"), (r'"x\ny"', r"x\ny"),
    ],
)
def test_field_values(text, value):
    for line in (f"m f={text} 1", f"m f={text},g=1i 1", f"m,t=\\ x f={text} 1"):
        [point] = parse(line)
        assert point.fields["f"] == value and type(point.fields["f"]) is type(value), line


@pytest.mark.parametrize(
    ("line", "measurement", "tags", "fields"),
    [
        (r"cpu\,x\ y,t\ k=v\,1\=2 f\=k=1i", "cpu,x y", {"t k": "v,1=2"}, {"f=k": 1}),
        (r"m=x,a=b f=1i", "m=x", {"a": "b"}, {"f": 1}),
        (r"m,a=C:\path\to f=1i", "m", {"a": "C:\\path\\to"}, {"f": 1}),
        (r"m,a=x\\,b f=1i", "m", {"a": "x\\,b"}, {"f": 1}),
        (r"m,a=x\\\,y f=1i", "m", {"a": "x\\\\,y"}, {"f": 1}),
        ('m,a="q" "f"=1i', "m", {"a": '"q"'}, {'"f"': 1}),
        ("m,host=gpu01,host=gpu02 f=1i,f=2i", "m", {"host": "gpu02"}, {"f": 2}),
        ("méasure,hôst=ü f=1i", "méasure", {"hôst": "ü"}, {"f": 1}),
    ],
)
def test_escaped_names(line, measurement, tags, fields):
    [point] = parse(line + " 1")
    assert (point.measurement, point.tags, point.fields) == (measurement, tags, fields)
    assert parse(encode([point])) == [point]


def test_whitespace_comments_blank_lines_and_crlf():
    text = "# comment\n\n   \nm f=1i 1\r\n  m  f=2i   2  \r\n\r\n# last"
    assert parse(text) == [Point("m", {}, {"f": 1}, 1), Point("m", {}, {"f": 2}, 2)]


def test_missing_timestamp_takes_the_default_time():
    assert parse("m f=1i", default_time_ns=42)[0].time_ns == 42
    before = time.time_ns()
    assert before <= parse("m f=1i")[0].time_ns <= time.time_ns()


def test_negative_and_extreme_timestamps():
    assert [p.time_ns for p in parse(f"m f=1i -5\nm f=1i {INT64_MAX}\nm f=1i {INT64_MIN}")] == [-5, INT64_MAX, INT64_MIN]


def test_string_field_may_span_lines():
    text = 'm,t=a s="first\nsecond, \\"third\\"",n=1i 7\nm f=2i 8\n'
    assert parse(text) == [
        Point("m", {"t": "a"}, {"s": 'first\nsecond, "third"', "n": 1}, 7),
        Point("m", {}, {"f": 2}, 8),
    ]


# --- errors -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("m", "no fields"),
        ("m,t=1", "no fields"),
        ("m f=", "missing value for field 'f'"),
        ("m f", "expected '=' after field key 'f'"),
        ("m =1", "expected field key=value"),
        ("m f=1,", "expected field key=value"),
        ("m,t f=1", "expected tag key=value"),
        ("m,t= f=1", "expected tag key=value"),
        ("m,=v f=1", "expected tag key=value"),
        ("m,t=a=b f=1", "unexpected '='"),
        (",t=1 f=1", "expected a measurement name"),
        ("m f=1x", "invalid field value '1x'"),
        ("m f=1.2.3", "invalid field value"),
        ("m f=nan", "invalid field value 'nan'"),
        ("m f=inf", "invalid field value 'inf'"),
        ("m f=1e999", "out of range"),
        ("m f=+1", "invalid field value '+1'"),
        ("m f=1_000i", "invalid integer"),
        ("m f=9223372036854775808i", "out of int64 range"),
        ("m f=18446744073709551616u", "out of uint64 range"),
        ("m f=-1u", "invalid unsigned integer"),
        ("m f=yes", "invalid field value 'yes'"),
        ('m f="open', "unterminated string value for field 'f'"),
        ('m f="a"b', "unexpected 'b' after field 'f'"),
        ("m f=1 12x", "invalid timestamp '12x'"),
        ("m f=1 1.5", "invalid timestamp"),
        ("m f=1 9223372036854775808", "out of int64 range"),
        ("m f=1 1 2", "unexpected text after the timestamp"),
    ],
)
def test_malformed_lines_name_input_line_and_problem(line, reason):
    with pytest.raises(LineProtocolError) as caught:
        parse(f"ok f=1i 1\n# fine\n{line}\nok f=2i 2\n", source_name="telegraf.out")
    error = caught.value
    assert (error.source, error.line_number, error.line) == ("telegraf.out", 3, line)
    assert reason in error.reason
    assert str(error).startswith("telegraf.out:3: column ")


def test_skip_mode_keeps_good_lines_and_counts_bad_ones():
    points = parse("a f=1i 1\nbad\nb f=2i 2\nc f=x 3\n", errors="skip")
    assert [p.measurement for p in points] == ["a", "b"]
    assert [(e.line_number, e.line) for e in points.errors] == [(2, "bad"), (4, "c f=x 3")]


def test_skip_mode_survives_a_stray_quote_in_a_long_input():
    text = 'm f="never closed 1\n' + "m f=1i 2\n" * 20_000
    points = parse(text, errors="skip")
    assert len(points) == 20_000 and len(points.errors) == 1


def test_parse_file_names_the_file(tmp_path):
    path = tmp_path / "metrics.lp"
    path.write_text("m f=1i 1\nm f=oops 2\n")
    with pytest.raises(LineProtocolError, match=r"metrics\.lp:2: .*invalid field value 'oops'"):
        parse_file(path)
    path.write_bytes(b"m f=1i 1\nm,t=\xff f=1i 2\n")
    with pytest.raises(LineProtocolError, match=r"metrics\.lp:2: not valid UTF-8"):
        parse_file(path)
    path.write_text("m f=1i 1\n")
    assert parse_file(path) == [Point("m", {}, {"f": 1}, 1)]


# --- encoding ---------------------------------------------------------------


def test_encode_formats_each_type():
    point = Point(
        "m",
        {"b": "2", "a": "1 x", "empty": ""},
        {"i": -3, "u": UINT64_MAX, "f": 0.1, "g": 1e16, "yes": True, "no": False, "s": 'a "b" \\ c\nd'},
        T,
    )
    assert encode([point]) == (
        r'm,a=1\ x,b=2 i=-3i,u=18446744073709551615u,f=0.1,g=1e+16,yes=true,no=false,s="a \"b\" \\ c'
        '\nd" 1700000000000000000\n'
    )


def test_encode_skips_nan_and_infinite_fields_and_empty_points():
    points = [
        Point("m", {}, {"nan": math.nan, "inf": math.inf, "ok": 1.5}, 1),
        Point("m", {}, {"nan": math.nan}, 2),
        Point("m", {}, {}, 3),
    ]
    assert encode(points) == "m ok=1.5 1\n"


def test_encode_accepts_numpy_scalars():
    point = Point("m", {}, {"f": np.float64(0.25), "i": np.int64(7)}, 1)
    assert encode([point]) == "m f=0.25,i=7i 1\n"


def test_encode_writes_control_characters_in_names_as_telegraf_does():
    assert encode([Point("m\tx", {"t": "a\nb"}, {"f": 1}, 1)]) == "m\\tx,t=a\\nb f=1i 1\n"


@pytest.mark.parametrize(
    ("point", "problem"),
    [
        (Point("", {}, {"f": 1}, 1), "empty measurement"),
        (Point("#m", {}, {"f": 1}, 1), "starts with '#'"),
        (Point("m\\", {}, {"f": 1}, 1), "ends with a backslash"),
        (Point("m", {"t": "x\\"}, {"f": 1}, 1), "ends with a backslash"),
        (Point("m", {"": "x"}, {"f": 1}, 1), "empty tag or field key"),
        (Point("m", {}, {"": 1}, 1), "empty tag or field key"),
        (Point("m", {}, {"f": 1 << 64}, 1), "outside the int64 and uint64 ranges"),
        (Point("m", {}, {"f": None}, 1), "unsupported field value type NoneType"),
    ],
)
def test_encode_refuses_what_line_protocol_cannot_carry(point, problem):
    with pytest.raises(ValueError, match="cannot encode Point") as caught:
        encode([point])
    assert problem in str(caught.value)


# --- speed ------------------------------------------------------------------


def test_parse_is_fast_enough_for_telegraf_volumes():
    lines = [
        f"infiniband,device=mlx5_{i % 8},host=gpu{i // 8:03d},port=1 port_xmit_data={i * 977}i,"
        f"port_rcv_data={i * 991}i,port_xmit_packets={i * 7}i,port_rcv_packets={i * 5}i,port_xmit_wait={i}i,"
        f"symbol_error=0i,link_downed=0i,port_rcv_errors=0i {T + (i // 800) * 30_000_000_000}"
        for i in range(20_000)
    ]
    text = "\n".join(lines)
    started = time.perf_counter()
    points = parse(text)
    elapsed = time.perf_counter() - started
    assert len(points) == 20_000
    assert elapsed < 1.0, f"{len(lines) / elapsed:,.0f} lines/s"  # ~200k lines/s on 2 cores


# --- properties -----------------------------------------------------------

# Names: anything line protocol can carry (no control characters, no trailing
# backslash, measurement not starting with '#'), biased towards the characters
# that need escaping.
_TRICKY = st.sampled_from([",", "=", " ", "\\", '"', "#", "é", "i", "t"])
_NAME_CHARS = st.one_of(_TRICKY, st.characters(blacklist_categories=("Cc", "Cs")))
_NAME = st.text(_NAME_CHARS, min_size=1, max_size=12).filter(lambda name: not name.endswith("\\"))
_MEASUREMENT = _NAME.filter(lambda name: not name.startswith("#"))
_VALUE = st.one_of(
    st.integers(INT64_MIN, UINT64_MAX),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.text(st.one_of(_TRICKY, st.sampled_from(["\n", "\r", "\t"]), st.characters(blacklist_categories=("Cs",)))),
)
_POINT = st.builds(
    Point,
    _MEASUREMENT,
    st.dictionaries(_NAME, _NAME, max_size=4),
    st.dictionaries(_NAME, _VALUE, min_size=1, max_size=5),
    st.integers(INT64_MIN, INT64_MAX),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_POINT, max_size=6))
def test_parse_of_encode_gives_the_points_back(points):
    assert typed(parse(encode(points))) == typed(points)


_LINE_ALPHABET = st.sampled_from(list(' ,=\\"#\r\ttTfFiue.-+0123456789ab_') + ["\n", "é", "\x00"])


@settings(max_examples=1500, deadline=None)
@given(st.one_of(st.text(_LINE_ALPHABET, max_size=40), st.text(max_size=40)))
def test_parse_raises_only_line_protocol_errors(text):
    try:
        parse(text, default_time_ns=0)
    except LineProtocolError:
        pass
    points = parse(text, default_time_ns=0, errors="skip")
    assert all(isinstance(point, Point) for point in points)


_FIELD_TEXT = st.one_of(
    st.sampled_from(["1i", "-2i", "3u", "1.5", "-.5e3", "t", "FALSE", '"s"', '"a \\" b"', '"', "1e999", "x"]),
    st.text(_LINE_ALPHABET, max_size=6),
)


@settings(max_examples=1500, deadline=None)
@given(
    st.text(st.sampled_from(list("mx,=\\ \"#é")), max_size=8),
    st.lists(st.tuples(st.text(st.sampled_from(list("fk,=\\ \"")), max_size=4), _FIELD_TEXT), max_size=4),
    st.sampled_from(["", " 5", " -5", "  7  ", " x", "\r", " 9223372036854775808"]),
)
def test_fast_paths_agree_with_the_scanner(series, fields, tail):
    line = "m" + series + " " + ",".join(f"{key}={value}" for key, value in fields) + tail
    assume("\n" not in line)
    try:
        expected = _Scanner(line, 0).parse(0)
    except ValueError:
        with pytest.raises(LineProtocolError):
            parse(line, default_time_ns=0)
        return
    assert parse(line, default_time_ns=0) == ([expected] if expected is not None else [])


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(["\\", '"', "m,", "=", ",", " ", "m f=\"", "\\\n", "m,a=b f=1i", "é"]), st.integers(1, 50_000))
def test_parse_of_pathological_repetition_does_not_hang(unit, count):
    """Long runs of escapes, quotes and separators (an unterminated string across the whole input) parse in
    time linear in their length: a hostile message cannot stall the reader."""
    text = unit * count
    started = time.monotonic()
    try:
        parse(text, default_time_ns=0)
    except LineProtocolError:
        pass
    parse(text, default_time_ns=0, errors="skip")
    plain_point_count(text)
    plain_point_count(f"m,a=b f={text}")
    assert time.monotonic() - started < 2.0, f"{len(text)} characters took {time.monotonic() - started:.1f} s"


# --- plain_point_count: validation without building points ----------------


def test_plain_point_count_takes_what_encode_writes_for_counters_and_strings():
    points = [
        Point("infiniband", {"host": "gpu01", "device": "mlx5_0", "port": "1"},
              {"port_xmit_data": 39453018562, "rate": 400.0, "up": True, "ratio": -1.5e-300, "big": 10**19 + 7,
               "large": 1.5e99}, T),
        Point("nvidia_smi", {"host": "gpu01", "name": "H100"}, {"driver_version": '550.54 "x" \\ y'}, T + 1),
    ]
    text = encode(points)
    assert plain_point_count(text) == 2
    assert plain_point_count("") == 0


@pytest.mark.parametrize("text", [
    "m f=1i\n",  # no timestamp: takes a default, so not storable as it is
    "m f=1i 1",  # no newline at the end
    "m f=1i 1\n\n",  # blank line
    "# comment\nm f=1i 1\n",
    "m f=1i -1\n",  # negative timestamps are valid, but not plain
    "m f=1i 9223372036854775808\n",  # over int64
    "m f=1234567890123456789i 1\n",  # 19 digits: needs a range check
    "m f=1e400 1\n",  # overflows to inf
    "m f=1.5e+300 1\n",  # valid, but its range needs a check
    "m f=x 1\n",
    "m,a\\ b=c f=1i 1\n",  # escapes
    "m,a=b=c f=1i 1\n",
    'm f="two\nlines" 1\n',
    "m f=1i 1\r\n",
    "m  f=1i 1\n",
    "m f=1i,f2= 1\n",
])
def test_plain_point_count_leaves_anything_unusual_to_parse(text):
    assert plain_point_count(text) is None


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_POINT, max_size=6))
def test_plain_point_count_of_encoded_points_is_their_number_or_none(points):
    text = encode(points)
    count = plain_point_count(text)
    if count is not None:
        assert count == len(parse(text))


_PLAIN_ALPHABET = st.sampled_from(list(' ,="\\#\r\t\ntTfFiue.-+0123456789m_') + ["é", "\x00", "\ud800"])


@settings(max_examples=3000, deadline=None)
@given(st.one_of(
    st.text(_PLAIN_ALPHABET, max_size=60),
    st.lists(st.tuples(st.text(_PLAIN_ALPHABET, max_size=12), _FIELD_TEXT, st.text(_PLAIN_ALPHABET, max_size=4)),
             max_size=3).map(lambda lines: "".join(f"m{tags} f={value} 1{tail}\n" for tags, value, tail in lines)),
))
def test_what_plain_point_count_accepts_parse_accepts_with_every_timestamp(text):
    """A count promises: parse succeeds, one point per line, none of them taking the default time."""
    count = plain_point_count(text)
    if count is None:
        return
    first = parse(text, default_time_ns=-1)
    assert len(first) == count == text.count("\n")
    assert first == parse(text, default_time_ns=-2)
