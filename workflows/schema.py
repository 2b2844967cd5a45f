"""The four tables of contract section 5, as data (the load-marker table is
targets.clickhouse_marker's).
The statements that create them are in workflows.sql."""
import datetime as dt
from dataclasses import dataclass
from decimal import Decimal


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    default: str | None = None  # SQL expression; a column with one may be absent from the file

    def default_value(self) -> dt.datetime | str | Decimal | float | int | None:
        """The DEFAULT as a Python value: what a null in the file becomes, as
        in ClickHouse's own input_format_null_as_default. now() is the time
        of the call, in UTC."""
        text = self.default
        if text is None:
            return None
        if text == "now()":
            return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None, microsecond=0)
        if text.startswith("'"):
            return text[1:-1]
        if self.type.startswith("Decimal"):
            return Decimal(text)
        return float(text) if self.type.startswith("Float") else int(text)


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    order_by: tuple[str, ...]
    indexes: tuple[str, ...] = ()  # skip index clauses a migrated table keeps (workflows.layout.migrated_layout)

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]


def _columns(spec: str) -> tuple[Column, ...]:
    """'name Type [DEFAULT expr], ...' as in the contract, one column per line."""
    columns = []
    for line in spec.strip().splitlines():
        name, rest = line.strip().rstrip(",").split(None, 1)
        type_, _, default = rest.partition(" DEFAULT ")
        columns.append(Column(name, type_.strip(), default.strip() or None))
    return tuple(columns)


RAW_ALERTS = Table("raw_alerts", _columns("""
    window_days UInt16
    processing_date Date
    alert_id String
    address String
    typology_type String
    pattern_id String DEFAULT ''
    pattern_type String DEFAULT ''
    severity String DEFAULT 'medium'
    suspected_address_type String DEFAULT 'unknown'
    suspected_address_subtype String DEFAULT ''
    alert_confidence_score Float32
    description String
    volume_usd Decimal128(18) DEFAULT 0
    evidence_json String
    risk_indicators Array(String)
    created_at DateTime DEFAULT now()
"""), order_by=("processing_date", "window_days", "alert_id"))

RAW_CLUSTERS = Table("raw_clusters", _columns("""
    window_days UInt16
    processing_date Date
    cluster_id String
    cluster_type String
    primary_address String DEFAULT ''
    pattern_id String DEFAULT ''
    primary_alert_id String
    related_alert_ids Array(String)
    addresses_involved Array(String)
    total_alerts UInt32
    total_volume_usd Decimal128(18)
    severity_max String DEFAULT 'medium'
    confidence_avg Float32
    earliest_alert_timestamp UInt64
    latest_alert_timestamp UInt64
    created_at DateTime DEFAULT now()
"""), order_by=("processing_date", "window_days", "cluster_id"))

RAW_ADDRESS_LABELS = Table("raw_address_labels", _columns("""
    processing_date Date
    window_days UInt16
    network String
    address String
    label String
    network_type String DEFAULT ''
    address_type String DEFAULT 'unknown'
    address_subtype String DEFAULT ''
    risk_level String DEFAULT 'medium'
    confidence_score Float32 DEFAULT 0.5
    trust_level String DEFAULT ''
    source String DEFAULT ''
"""), order_by=("processing_date", "window_days", "network", "address"))

RAW_FEATURES = Table("raw_features", _columns("""
    window_days UInt16
    processing_date Date
    address String
    degree_in UInt32
    degree_out UInt32
    degree_total UInt32
    unique_counterparties UInt32
    total_in_usd Decimal128(18)
    total_out_usd Decimal128(18)
    net_flow_usd Decimal128(18)
    total_volume_usd Decimal128(18)
    avg_tx_in_usd Decimal128(18)
    avg_tx_out_usd Decimal128(18)
    median_tx_in_usd Decimal128(18)
    median_tx_out_usd Decimal128(18)
    max_tx_usd Decimal128(18)
    min_tx_usd Decimal128(18)
    amount_variance Float64
    amount_skewness Float64
    amount_kurtosis Float64
    volume_std Float64
    volume_cv Float64
    flow_concentration Float64
    tx_in_count UInt64
    tx_out_count UInt64
    tx_total_count UInt64
    activity_days UInt32
    activity_span_days UInt32
    avg_daily_volume_usd Decimal128(18)
    peak_hour UInt8
    peak_day UInt8
    regularity_score Float32
    burst_factor Float32
    reciprocity_ratio Float32
    flow_diversity Float32
    counterparty_concentration Float32
    concentration_ratio Float32
    velocity_score Float32
    structuring_score Float32
    unique_assets_in UInt32
    unique_assets_out UInt32
    dominant_asset_in String
    dominant_asset_out String
    asset_diversity_score Float32
    hourly_activity Array(UInt16)
    daily_activity Array(UInt16)
    peak_activity_hour UInt8
    peak_activity_day UInt8
    hourly_entropy Float32
    daily_entropy Float32
    weekend_transaction_ratio Float32
    night_transaction_ratio Float32
    small_transaction_ratio Float32
    consistency_score Float32
    pagerank Float32
    betweenness Float32
    closeness Float32
    clustering_coefficient Float32
    kcore UInt32
    community_id UInt32
    centrality_score Float32
    khop1_count UInt32
    khop2_count UInt32
    khop3_count UInt32
    khop1_volume_usd Decimal128(18)
    khop2_volume_usd Decimal128(18)
    khop3_volume_usd Decimal128(18)
    flow_reciprocity_entropy Float32
    counterparty_stability Float32
    flow_burstiness Float32
    transaction_regularity Float32
    amount_predictability Float32
    behavioral_anomaly_score Float32
    graph_anomaly_score Float32
    neighborhood_anomaly_score Float32
    global_anomaly_score Float32
    outlier_transactions UInt32
    suspicious_pattern_score Float32
    is_exchange_like UInt8
    is_whale UInt8
    is_mixer_like UInt8
    is_contract_like UInt8
    is_new_address UInt8
    is_dormant_reactivated UInt8
    is_high_volume_trader UInt8
    is_hub_address UInt8
    is_retail_active UInt8
    is_whale_inactive UInt8
    is_retail_inactive UInt8
    is_regular_user UInt8
    unique_recipients_count UInt32
    unique_senders_count UInt32
    completeness_score Float32
    quality_score Float32
    outlier_score Float32
    confidence_score Float32
    first_activity_timestamp UInt64
    last_activity_timestamp UInt64
    created_at DateTime DEFAULT now()
"""), order_by=("processing_date", "window_days", "address"))

SCHEMAS = {t.name: t for t in (RAW_ALERTS, RAW_FEATURES, RAW_CLUSTERS, RAW_ADDRESS_LABELS)}
TABLES = tuple(SCHEMAS)  # the four tables' names, in the order they are loaded

COMPLETE_DAYS_VIEW = "complete_days"  # for readers: the days whose four tables are loaded
STAGING_PREFIX = "_staging_"  # tables of loads under way, one per load


def quote_identifier(name: str) -> str:
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"
