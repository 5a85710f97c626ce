#!/usr/bin/python3
"""A Troupe client in Python over the FlatBuffers TCP protocol (API.md
"FlatBuffers client protocol", schemas/protocol.fbs).

It connects to a node's --client address, authenticates, creates a run,
subscribes to the run's events and prints each one as it commits, until the
run ends. Exit status: 0 when the run succeeded, 1 when it failed or was
cancelled (or on a protocol error), 2 on bad usage.

    troupe_client.py --gen DIR [--server HOST:PORT] [--token KEY]
                     [--model M] [--system TEXT] [--tool NAME ...] GOAL

DIR holds the code that `flatc --python` generates from schemas/journal.fbs,
command.fbs and protocol.fbs (a `troupe` package); the build makes it (see
README.md), nothing generated is committed. The runtime is Debian's
python3-flatbuffers. The key defaults to $TROUPE_TOKEN, the server to
$TROUPE_SERVER or 127.0.0.1:7301.

The wire: every frame is a 4-byte little-endian length, then a FlatBuffer
with identifier TRP1 whose root is a Frame holding a Request, a Response, an
EventPush or a SubscriptionEnd (FlatBuffers' "size-prefixed" buffers). A
client picks the id of each Request; the Response with the same id answers
it. Events arrive as EventPush frames whose `event` bytes are a whole
troupe.journal.Event buffer (identifier TRJ1).
"""
import argparse
import json
import os
import socket
import struct
import sys

FRAME_MAX = 16 << 20  # the server refuses larger frames; so do we


def load_generated(gen):
    sys.path.insert(0, gen)
    global flatbuffers, P, J
    import flatbuffers  # noqa: F401  Debian's python3-flatbuffers
    import troupe.journal as J  # noqa: F401
    import troupe.proto as P  # noqa: F401
    # The generated modules: troupe.proto.Frame is the module, .Frame the class.
    for name in ("Frame", "Request", "Response", "Error", "Auth", "CreateRun", "Subscribe", "Subscribed",
                 "RunInfo", "EventPush", "SubscriptionEnd", "Body", "Op", "Result", "ErrorCode"):
        __import__("troupe.proto." + name)
    for name in ("AgentConfig", "Event", "Data", "RunStatus", "Usage", "Decision",
                 "RunCreated", "RunAssigned", "LlmRequested", "LlmCompleted", "ToolCall", "ToolRequested",
                 "ToolStarted", "ToolCompleted", "ApprovalRequested", "ApprovalDecided", "MemoryWritten",
                 "RunSucceeded", "RunFailed", "RunCancelled", "BudgetExceeded", "LoopDetected"):
        __import__("troupe.journal." + name)


def enum_names(cls):
    """{value: name} of a generated enum class."""
    return {v: k for k, v in vars(cls).items() if not k.startswith("_") and isinstance(v, int)}


def text(b):
    return b.decode("utf-8", "replace") if b is not None else ""


class ProtocolError(Exception):
    pass


class Client:
    """One connection. Not thread-safe; requests are sent one at a time here,
    though the protocol allows many in flight (ids tell the answers apart)."""

    def __init__(self, server, token):
        host, _, port = server.rpartition(":")
        self.sock = socket.create_connection((host or "127.0.0.1", int(port)), timeout=120)
        self.next_id = 0
        self.token = token
        self.pending = []  # frames read while waiting for something else

    def close(self):
        self.sock.close()

    # ---- frames -----------------------------------------------------------

    def _recv_exact(self, n):
        out = bytearray()
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            if not chunk:
                raise ProtocolError("the server closed the connection")
            out += chunk
        return bytes(out)

    def read_frame(self):
        """The next Frame (verified to carry TRP1)."""
        if self.pending:
            return self.pending.pop(0)
        (n,) = struct.unpack("<I", self._recv_exact(4))
        if n > FRAME_MAX:
            raise ProtocolError("a frame of %d bytes is over the 16 MiB limit" % n)
        buf = self._recv_exact(n)
        if not P.Frame.Frame.FrameBufferHasIdentifier(buf, 0):
            raise ProtocolError("a frame without the TRP1 identifier")
        return P.Frame.Frame.GetRootAs(buf, 0)

    def request(self, op_type, build_op):
        """Send a Request whose op is built by build_op(builder) -> offset;
        return its Response (raising ProtocolError on an error answer).
        Frames for other ids (event pushes) are kept for read_frame."""
        self.next_id += 1
        rid = self.next_id
        b = flatbuffers.Builder(1024)
        op = build_op(b)
        P.Request.Start(b)
        P.Request.AddId(b, rid)
        P.Request.AddOpType(b, op_type)
        P.Request.AddOp(b, op)
        req = P.Request.End(b)
        P.Frame.Start(b)
        P.Frame.AddBodyType(b, P.Body.Body.Request)
        P.Frame.AddBody(b, req)
        b.FinishSizePrefixed(P.Frame.End(b), file_identifier=b"TRP1")
        self.sock.sendall(bytes(b.Output()))
        held = []
        try:
            while True:
                f = self.read_frame()
                if f.BodyType() != P.Body.Body.Response:
                    held.append(f)
                    continue
                r = P.Response.Response()
                t = f.Body()
                r.Init(t.Bytes, t.Pos)
                if r.Id() == 0:
                    raise ProtocolError("the server refused a frame: " + error_text(r.Error()))
                if r.Id() != rid:
                    held.append(f)
                    continue
                if r.Error() is not None and r.Error().Code() != P.ErrorCode.ErrorCode.None_:
                    raise ProtocolError(error_text(r.Error()))
                return r
        finally:
            self.pending = held + self.pending

    # ---- operations -----------------------------------------------------------

    def auth(self):
        def op(b):
            key = b.CreateString(self.token)
            name = b.CreateString("troupe_client.py")
            P.Auth.Start(b)
            P.Auth.AddApiKey(b, key)
            P.Auth.AddClientName(b, name)
            return P.Auth.End(b)
        self.request(P.Op.Op.Auth, op)

    def create_run(self, goal, model, system, tools):
        def op(b):
            g = b.CreateString(goal)
            m = b.CreateString(model) if model else None
            s = b.CreateString(system) if system else None
            names = [b.CreateString(t) for t in tools]
            tv = None
            if names:
                J.AgentConfig.StartToolsVector(b, len(names))
                for n in reversed(names):
                    b.PrependUOffsetTRelative(n)
                tv = b.EndVector()
            J.AgentConfig.Start(b)
            if m is not None:
                J.AgentConfig.AddModel(b, m)
            if s is not None:
                J.AgentConfig.AddSystem(b, s)
            if tv is not None:
                J.AgentConfig.AddTools(b, tv)
            agent = J.AgentConfig.End(b)
            P.CreateRun.Start(b)
            P.CreateRun.AddGoal(b, g)
            P.CreateRun.AddAgent(b, agent)
            return P.CreateRun.End(b)
        r = self.request(P.Op.Op.CreateRun, op)
        if r.ResultType() != P.Result.Result.RunInfo:
            raise ProtocolError("CreateRun answered without a RunInfo")
        info = P.RunInfo.RunInfo()
        t = r.Result()
        info.Init(t.Bytes, t.Pos)
        return info

    def subscribe(self, run_id, after_seq=0):
        def op(b):
            rid = b.CreateString(run_id)
            P.Subscribe.Start(b)
            P.Subscribe.AddRunId(b, rid)
            P.Subscribe.AddAfterSeq(b, after_seq)
            return P.Subscribe.End(b)
        r = self.request(P.Op.Op.Subscribe, op)
        if r.ResultType() != P.Result.Result.Subscribed:
            raise ProtocolError("Subscribe answered without Subscribed")
        s = P.Subscribed.Subscribed()
        t = r.Result()
        s.Init(t.Bytes, t.Pos)
        return s.SubscriptionId()

    def events(self, sub_id):
        """Yield each journal Event of subscription sub_id until its
        SubscriptionEnd; then return the end's reason."""
        while True:
            f = self.read_frame()
            kind = f.BodyType()
            t = f.Body()
            if kind == P.Body.Body.EventPush:
                push = P.EventPush.EventPush()
                push.Init(t.Bytes, t.Pos)
                if push.SubscriptionId() != sub_id:
                    continue
                data = bytes(push.Event(j) for j in range(push.EventLength()))
                if not J.Event.Event.EventBufferHasIdentifier(data, 0):
                    raise ProtocolError("an event without the TRJ1 identifier")
                yield J.Event.Event.GetRootAs(data, 0)
            elif kind == P.Body.Body.SubscriptionEnd:
                end = P.SubscriptionEnd.SubscriptionEnd()
                end.Init(t.Bytes, t.Pos)
                if end.SubscriptionId() == sub_id:
                    return text(end.Reason())


def error_text(e):
    if e is None:
        return "unknown error"
    names = enum_names(P.ErrorCode.ErrorCode)
    return "%s: %s" % (names.get(e.Code(), e.Code()), text(e.Message()))


# ---- printing events ------------------------------------------------------------

EVENT_TYPES = {
    "RunCreated": "run.created", "RunAssigned": "run.assigned", "LlmRequested": "llm.requested",
    "LlmCompleted": "llm.completed", "ToolRequested": "tool.requested", "ToolStarted": "tool.started",
    "ToolCompleted": "tool.completed", "ApprovalRequested": "approval.requested",
    "ApprovalDecided": "approval.decided", "MemoryWritten": "memory.written", "RunSucceeded": "run.succeeded",
    "RunFailed": "run.failed", "RunCancelled": "run.cancelled", "BudgetExceeded": "budget.exceeded",
    "LoopDetected": "loop.detected",
}


def usage_text(u):
    if u is None:
        return ""
    return "%d+%d tokens, $%.6f" % (u.PromptTokens(), u.CompletionTokens(), u.CostMicroUsd() / 1e6)


def describe(ev):
    """(API.md type name, a one-line summary) of a journal Event."""
    names = enum_names(J.Data.Data)
    tname = names.get(ev.DataType(), "unknown")
    api_name = EVENT_TYPES.get(tname, "unknown(%d)" % ev.DataType())
    if tname not in EVENT_TYPES:
        return api_name, ""  # a type this client does not know: ignored, as API.md asks
    d = getattr(getattr(J, tname), tname)()
    t = ev.Data()
    d.Init(t.Bytes, t.Pos)
    if tname == "RunCreated":
        return api_name, "goal: " + text(d.Goal())
    if tname == "LlmRequested":
        return api_name, "step %d, %d messages" % (d.Step(), d.MessageCount())
    if tname == "LlmCompleted":
        calls = ["%s(%s)" % (text(d.ToolCalls(i).Name()), text(d.ToolCalls(i).Arguments()))
                 for i in range(d.ToolCallsLength())]
        parts = [json.dumps(text(d.Content()))] if d.Content() else []
        if calls:
            parts.append("calls " + ", ".join(calls))
        parts.append(usage_text(d.Usage()))
        return api_name, "; ".join(parts)
    if tname in ("ToolRequested", "ToolStarted"):
        return api_name, text(d.Tool())
    if tname == "ToolCompleted":
        return api_name, ("error: " + text(d.Error())) if d.IsError() else text(d.Result())
    if tname == "ApprovalRequested":
        return api_name, "%s %s (approval %s)" % (text(d.Tool()), text(d.Arguments()), text(d.ApprovalId()))
    if tname == "ApprovalDecided":
        return api_name, enum_names(J.Decision.Decision).get(d.Decision(), "?") + " by " + text(d.DecidedBy())
    if tname == "RunSucceeded":
        return api_name, "output: %s (%d steps, %s)" % (json.dumps(text(d.Output())), d.Steps(), usage_text(d.Usage()))
    if tname == "RunFailed":
        return api_name, "%s: %s" % (text(d.ErrorCode()), text(d.Error()))
    if tname == "RunCancelled":
        return api_name, text(d.Reason())
    return api_name, ""


def main(argv):
    ap = argparse.ArgumentParser(description="Create a Troupe run and follow its events over the TCP protocol.")
    ap.add_argument("--gen", required=True, help="directory with the flatc --python package (troupe/)")
    ap.add_argument("--server", default=os.environ.get("TROUPE_SERVER", "127.0.0.1:7301"))
    ap.add_argument("--token", default=os.environ.get("TROUPE_TOKEN", ""))
    ap.add_argument("--model", default="")
    ap.add_argument("--system", default="")
    ap.add_argument("--tool", action="append", default=[], help="a tool the agent may call (repeatable)")
    ap.add_argument("goal")
    args = ap.parse_args(argv)
    load_generated(args.gen)

    try:
        c = Client(args.server, args.token)
    except (OSError, ValueError) as e:
        print("troupe_client: cannot connect to %s: %s" % (args.server, e), file=sys.stderr)
        return 1
    try:
        if args.token:
            c.auth()
        run = c.create_run(args.goal, args.model, args.system, args.tool)
        run_id = text(run.Id())
        print("created %s (%s)" % (run_id, enum_names(J.RunStatus.RunStatus).get(run.Status(), "?")), flush=True)
        sub = c.subscribe(run_id)
        last = None
        for ev in c.events(sub):
            name, summary = describe(ev)
            print("%4d %-18s %s" % (ev.Seq(), name, summary), flush=True)
            last = name
        print("run %s ended: %s" % (run_id, last), flush=True)
        return 0 if last == "run.succeeded" else 1
    except (ProtocolError, OSError) as e:
        print("troupe_client: %s" % e, file=sys.stderr)
        return 1
    finally:
        c.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
