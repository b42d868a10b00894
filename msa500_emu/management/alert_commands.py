"""SHOW ALERTS and SET ALERTS: where the array's alerts go (msa500_emu.alerting), at run time.

SET ALERTS takes comma-separated lists (an empty value: none of that kind); what it sets is kept
in the state directory and wins over the config file's [alerts] at the next start. The community
and the SNMPv3 keys are never shown.
"""

from __future__ import annotations

from typing import Any

from firmware_model import operations as ops

from . import render
from .grammar import Array, Command, CommandError, Form, Reply, options

_SET_USAGE = "SET ALERTS [SNMP=addrs] [COMMUNITY=x] [SYSLOG=addrs] [WEBHOOK=urls]"


def alerts_text(st: dict[str, Any]) -> str:
    rows = [[s["sink"], s["target"], s["version"], str(s["sent"]), str(s["failed"]), str(s["dropped"]),
             render.value(s.get("last_error"))] for s in st.get("sinks", [])]
    v3 = st.get("snmpv3")
    items = [("Settings from", render.value(st.get("source"))),
             ("SNMP managers", render.value(st.get("snmp"))),
             ("SNMP community", render.value(st.get("community")) if not v3 else "- (SNMPv3)"),
             ("SNMPv3 user", f"{v3['user']}, auth {v3['auth']}, priv {v3['priv']}, engine id "
                             f"{render.value(v3.get('engine_id'))}" if v3 else "-"),
             ("Syslog receivers", render.value(st.get("syslog"))),
             ("Webhooks", render.value(st.get("webhook")))]
    lines = ["Alerts:", *render.pairs(items)]
    if rows:
        table = render.table(["SINK", "TARGET", "VERSION", "SENT", "FAILED", "DROPPED", "LAST ERROR"], rows,
                             right=(3, 4, 5))
        lines += ["", *("  " + line for line in table)]
    else:
        lines += ["", "  no sinks: alerts go to the log only (SET ALERTS SNMP=host:port adds a manager)"]
    return "\n".join(lines)


def _show(array: Array, words: list[str]) -> Reply:
    if words:
        raise CommandError(f"unexpected {words[0]!r} (usage: SHOW ALERTS)")
    st = array.operate("alert_status")
    return Reply(st, alerts_text(st))


def _set(array: Array, words: list[str]) -> Reply:
    pos, o = options(words, {"SNMP", "COMMUNITY", "SYSLOG", "WEBHOOK"}, _SET_USAGE)
    if pos or not o:
        raise CommandError(f"usage: {_SET_USAGE}")
    st = array.operate("set_alerts", **{k.lower(): v for k, v in o.items()})
    return Reply(st, "Alert settings changed (kept in the state directory).\n" + alerts_text(st))


COMMANDS: dict[str, Command] = {
    "SHOW ALERTS": Command(_show, (Form("SHOW ALERTS", "alert_status"),)),
    "SET ALERTS": Command(_set, (
        Form(_SET_USAGE, "set_alerts",
             "where alerts go: addrs host:port[,host:port] (SNMP managers, syslog over UDP), x the SNMPv2c "
             "community, urls webhook URLs; an empty value: none"),)),
}
assert all(f.op in ops.OPERATIONS for c in COMMANDS.values() for f in c.forms)
