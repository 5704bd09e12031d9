"""Load harness: protocol clients that drive any server and measure it (imports no server internals).

Layout (one concern per module; scenarios are plug-ins):

    cli.py            `cxgw load ...` subcommands: register(subparsers), main() for `python -m load`
    options.py        common knobs: target + loopback safety, limits, sizes, TLS, credentials, units
    context.py        RunContext: what a scenario receives (target, limits, recorder, params)
    runner.py         drive(): closed loop / open loop (--rate), count/duration/hard-cap bounds
    stats.py          Recorder: exact accounting, HDR histograms, per-second time series
    result.py         result dict (JSON schema), summary table
    report.py         HTML report: headline numbers, plots (embedded and as PNG files), tables
    plots.py          matplotlib PNGs: throughput over time, HDR percentile curve, latency
                      over time (one panel per part for workday)
    progress.py       live rich table while a run goes (per part for workday), TTY only
    compare.py        ratios B/A between two result files
    smtp_source.py    import a Postfix smtp-source run for cross-checking
    message.py        test messages with unique X-Load-Id / Message-ID, exact sizes
    smtpclient.py     lean SMTP client (raw asyncio streams, PIPELINING, STARTTLS, AUTH PLAIN)
    imapclient.py     lean IMAP4rev1 client (LOGIN/AUTHENTICATE, SELECT, FETCH, STORE, IDLE)
    imapverify.py     end-to-end arrival check over IMAP (X-Load-Id search)
    xmppclient.py     lean XMPP client (STARTTLS, SASL PLAIN / SCRAM-SHA-256 / SCRAM-SHA-1, bind)
    scenarios/        one module per scenario, registered in scenarios/__init__.py SCENARIOS:
                      smtp-burst, smtp-circular, imap-sync, imap-idle, xmpp-login, xmpp-chat,
                      doc-exchange, workday (which runs the others at once as its parts)

Adding a scenario: write `scenarios/<name>.py` with `add_arguments(parser)` (call
`options.add_common_arguments`), `async run(ctx, args)` that drives `runner.drive` with a
worker per connection and records into `ctx.rec`, and `SCENARIO = Scenario(...)`; then
list it in `scenarios/__init__.py`.
"""
