"""The dashboard's two dictionaries, English (``EN``) and Chinese (``ZH``), with the same keys.

Templates print ``t(key)`` inside an element carrying ``data-i18n="key"``; the browser swaps the text for the
other language client side (``static/app.js``), so the choice survives reloads and the periodic refresh
(localStorage). Number formats follow the language's locale (``LOCALES``).
"""

from __future__ import annotations

LOCALES = {"en": "en-US", "zh": "zh-CN"}

EN: dict[str, str] = {
    "app.title": "ATS dashboard",
    "nav.assets": "Assets", "nav.analytics": "Analytics", "nav.datahub": "Data Hub", "nav.kb": "Knowledge base",
    "nav.reports": "Reports and plans", "nav.backtests": "Backtests", "nav.events": "Events",
    "lang.toggle": "中文",
    "common.account": "Account", "common.run": "Run", "common.as_of": "As of", "common.none": "Nothing to show",
    "common.refresh": "Refreshes every 30 s", "common.symbol": "Symbol", "common.time": "Time",
    "common.side": "Side", "common.qty": "Quantity", "common.price": "Price", "common.status": "Status",
    "common.strategy": "Strategy", "common.reason": "Reason", "common.filter": "Filter", "common.apply": "Apply",
    "common.all": "All", "common.back": "Back", "common.fee": "Fee",
    "side.buy": "Buy", "side.sell": "Sell",
    "assets.value": "Portfolio value", "assets.pnl": "P&L", "assets.window": "Window", "assets.pnl_usd": "P&L (USD)",
    "assets.pnl_pct": "P&L (%)", "assets.from": "From",
    "win.today": "Today", "win.7d": "7 days", "win.30d": "30 days", "win.6m": "6 months", "win.all_time": "All time",
    "assets.symbols": "Holdings by symbol", "assets.state": "State", "assets.value_usd": "Value (USD)",
    "assets.invested_today": "Invested today (USD)", "assets.recent": "Recent trades",
    "state.owned": "Owned", "state.traded": "Traded", "state.watched": "Watched",
    "breaker.title": "Circuit breakers", "breaker.state": "Trading state",
    "breaker.ACTIVE": "Active", "breaker.REDUCING": "Reducing", "breaker.HALTED": "Halted",
    "breaker.cause": "Cause", "breaker.name": "Breaker", "breaker.scope": "Scope", "breaker.since": "Since",
    "breaker.tripped": "Tripped", "breaker.ok": "OK",
    "analytics.equity_chart": "Hourly portfolio P&L (USD)", "analytics.flow_chart": "Hourly volume and fees (USD)",
    "analytics.buy_volume": "Buy volume", "analytics.sell_volume": "Sell volume", "analytics.fees": "Fees",
    "analytics.cum_net": "Cumulative net P&L", "analytics.per_strategy": "Results by strategy",
    "analytics.trades": "Trades", "analytics.wins": "Wins", "analytics.win_rate": "Win rate",
    "analytics.realized": "Realized P&L (USD)", "analytics.fees_usd": "Fees (USD)",
    "hub.grid": "Coverage by symbol and timeframe", "hub.legend": "Green: complete and fresh; amber: small gaps or "
    "late; red: large gaps, stale or empty", "hub.run_backfill": "Run backfill", "hub.gaps": "Gaps",
    "hub.missing": "Missing bars", "hub.completeness": "Completeness", "hub.last": "Last candle",
    "hub.job_started": "Backfill started, job", "hub.busy": "Busy: another heavy run holds the lock",
    "hub.job": "Job", "hub.failed": "Failed", "hub.done": "Done", "hub.running": "Running",
    "status.green": "Green", "status.amber": "Amber", "status.red": "Red",
    "kb.counters": "Article status", "kb.active": "Active", "kb.stale": "Stale", "kb.pending": "Pending",
    "kb.failed": "Failed", "kb.orphaned": "Orphaned", "kb.category": "Category", "kb.article": "Article",
    "kb.source": "Source", "kb.drift": "Drift", "kb.version": "Version", "kb.built_at": "Built at",
    "kb.drift_none": "In sync", "kb.drift_yes": "Source changed", "kb.drift_never": "Never built",
    "reports.reports": "Reports", "reports.plans": "Plans", "reports.kind": "Kind", "reports.file": "File",
    "reports.modified": "Modified", "reports.figures": "Figures from the JSON twin",
    "bt.runs": "Backtest runs", "bt.id": "ID", "bt.window": "Window", "bt.return": "Return (%)",
    "bt.drawdown": "Max drawdown (%)", "bt.sharpe": "Sharpe", "bt.trades": "Trades", "bt.equity": "Equity curve (USD)",
    "bt.blocked": "Blocked signals by gate and reason", "bt.gate": "Gate", "bt.count": "Count",
    "bt.compare": "Compare runs", "bt.trade_list": "Trades", "bt.entry": "Entry", "bt.exit": "Exit",
    "bt.pnl": "P&L (USD)", "bt.select": "Select runs to compare",
    "ev.title": "Events", "ev.component": "Component", "ev.type": "Type", "ev.severity": "Severity",
    "ev.details": "Details", "ev.kind.breaker": "Breaker trips and resets", "ev.kind.anomaly": "Anomalies",
    "ev.kind.cron": "Cron runs", "ev.kind.dashboard": "Dashboard actions", "ev.kind": "Kind",
}

ZH: dict[str, str] = {
    "app.title": "ATS 仪表盘",
    "nav.assets": "资产", "nav.analytics": "分析", "nav.datahub": "数据中心", "nav.kb": "知识库",
    "nav.reports": "报告与计划", "nav.backtests": "回测", "nav.events": "事件",
    "lang.toggle": "English",
    "common.account": "账户", "common.run": "运行", "common.as_of": "截至", "common.none": "暂无数据",
    "common.refresh": "每 30 秒自动刷新", "common.symbol": "品种", "common.time": "时间",
    "common.side": "方向", "common.qty": "数量", "common.price": "价格", "common.status": "状态",
    "common.strategy": "策略", "common.reason": "原因", "common.filter": "筛选", "common.apply": "应用",
    "common.all": "全部", "common.back": "返回", "common.fee": "手续费",
    "side.buy": "买入", "side.sell": "卖出",
    "assets.value": "组合市值", "assets.pnl": "盈亏", "assets.window": "区间", "assets.pnl_usd": "盈亏（美元）",
    "assets.pnl_pct": "盈亏（%）", "assets.from": "起点",
    "win.today": "今日", "win.7d": "近 7 天", "win.30d": "近 30 天", "win.6m": "近 6 个月", "win.all_time": "累计",
    "assets.symbols": "各品种持仓", "assets.state": "状态", "assets.value_usd": "市值（美元）",
    "assets.invested_today": "今日投入（美元）", "assets.recent": "最近成交",
    "state.owned": "持有", "state.traded": "已交易", "state.watched": "关注",
    "breaker.title": "熔断器", "breaker.state": "交易状态",
    "breaker.ACTIVE": "正常", "breaker.REDUCING": "减仓", "breaker.HALTED": "停止",
    "breaker.cause": "原因", "breaker.name": "熔断器", "breaker.scope": "范围", "breaker.since": "起始时间",
    "breaker.tripped": "已触发", "breaker.ok": "正常",
    "analytics.equity_chart": "组合每小时盈亏（美元）", "analytics.flow_chart": "每小时成交额与手续费（美元）",
    "analytics.buy_volume": "买入成交额", "analytics.sell_volume": "卖出成交额", "analytics.fees": "手续费",
    "analytics.cum_net": "累计净盈亏", "analytics.per_strategy": "各策略表现",
    "analytics.trades": "交易笔数", "analytics.wins": "盈利笔数", "analytics.win_rate": "胜率",
    "analytics.realized": "已实现盈亏（美元）", "analytics.fees_usd": "手续费（美元）",
    "hub.grid": "各品种与周期的数据覆盖", "hub.legend": "绿色：完整且及时；黄色：少量缺口或延迟；红色：大量缺口、过期或无数据",
    "hub.run_backfill": "补全数据", "hub.gaps": "缺口",
    "hub.missing": "缺失K线数", "hub.completeness": "完整度", "hub.last": "最新K线",
    "hub.job_started": "补全任务已启动，任务号", "hub.busy": "忙碌：另一个重型任务正占用锁",
    "hub.job": "任务", "hub.failed": "失败", "hub.done": "完成", "hub.running": "进行中",
    "status.green": "绿色", "status.amber": "黄色", "status.red": "红色",
    "kb.counters": "文章状态", "kb.active": "有效", "kb.stale": "过期", "kb.pending": "待生成",
    "kb.failed": "失败", "kb.orphaned": "源文件已删除", "kb.category": "类别", "kb.article": "文章",
    "kb.source": "源文件", "kb.drift": "偏移", "kb.version": "版本", "kb.built_at": "生成时间",
    "kb.drift_none": "已同步", "kb.drift_yes": "源文件已变更", "kb.drift_never": "尚未生成",
    "reports.reports": "报告", "reports.plans": "计划", "reports.kind": "类型", "reports.file": "文件",
    "reports.modified": "修改时间", "reports.figures": "JSON 附件中的数据",
    "bt.runs": "回测记录", "bt.id": "编号", "bt.window": "区间", "bt.return": "收益率（%）",
    "bt.drawdown": "最大回撤（%）", "bt.sharpe": "夏普比率", "bt.trades": "交易笔数", "bt.equity": "权益曲线（美元）",
    "bt.blocked": "按关卡和原因统计的被拦截信号", "bt.gate": "关卡", "bt.count": "次数",
    "bt.compare": "对比回测", "bt.trade_list": "交易明细", "bt.entry": "开仓", "bt.exit": "平仓",
    "bt.pnl": "盈亏（美元）", "bt.select": "选择要对比的回测",
    "ev.title": "事件", "ev.component": "模块", "ev.type": "类型", "ev.severity": "级别",
    "ev.details": "详情", "ev.kind.breaker": "熔断触发与恢复", "ev.kind.anomaly": "数据异常",
    "ev.kind.cron": "定时任务", "ev.kind.dashboard": "仪表盘操作", "ev.kind": "类别",
}

DICTS = {"en": EN, "zh": ZH}


def translate(lang: str, key: str) -> str:
    """The label for ``key`` in ``lang`` ('en' | 'zh'; anything else falls back to English).

    Raises
    ------
    KeyError
        When ``key`` is in neither dictionary (a template typo fails loudly in tests).
    """
    return DICTS.get(lang, EN)[key]
