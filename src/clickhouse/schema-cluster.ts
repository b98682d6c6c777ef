/**
 * The analytics schema on a ClickHouse cluster (CLICKHOUSE_CLUSTER): the same
 * migrations as on one node (schema.ts), each statement laid out for the cluster.
 * PURE: statements in, statements out. docs/deployment.md "Scale out" is the runbook.
 *
 * Layout. Every DDL statement runs ON CLUSTER. A table is either
 *  - sharded: `<name>_local` on every node, Replicated* engine with the same
 *    engine arguments (the ReplacingMergeTree version and is_deleted columns
 *    kept), ZooKeeper path per shard ({shard}) and replica name {replica}; and
 *    under the table's own name a Distributed table over it, for inserts and
 *    reads. Analysts, the store and the documented queries keep the plain names,
 *    so they read and write the Distributed tables unchanged;
 *  - everywhere: one replicated table with the same content on every node (the
 *    ZooKeeper path has no {shard}), for small tables that analysts join with
 *    sharded ones (reference data, device associations) and for the migration
 *    record: a join then runs on each shard against a complete local copy.
 *
 * Sharding keys. A ReplacingMergeTree deduplicates only rows of one shard, so each
 * sharded table is sharded by a column of its sort key that every version of a
 * row shares: observations, components, samples, the rollup touch and state
 * tables by patient_id, so that a patient's rows (and each bucket's) live on one
 * shard and FINAL on each shard is FINAL on the whole; device_messages by device_id
 * (its key has no patient).
 *
 * Rollups. The store inserts touched buckets into the Distributed rollup_touch,
 * which sends each to the shard of its patient; there the materialized views fire
 * on rollup_touch_local and recompute the bucket from that shard's local tables
 * (vital_points_local, vitals_1m_state_local) into its local state tables
 * (schema-rollups.ts explains the recomputation). This needs the rows to be on
 * the shard before the touch: the writer inserts synchronously
 * (insert_distributed_sync, server.ts), and to the first replica of each shard
 * (load_balancing in_order), so the touch lands on the replica that took the rows.
 */
import { PipelineError } from '../errors.js';
import type { LocalName } from './schema-rollups.js';

/** The cluster a schema is laid out on (CLICKHOUSE_CLUSTER). */
export interface ClusterLayout {
  /** The database, unquoted (assertDatabaseName). */
  readonly database: string;
  /** The cluster name of the servers' remote_servers (assertClusterName). */
  readonly cluster: string;
}

/** What CLICKHOUSE_CLUSTER accepts (config.ts). */
export const CLUSTER_NAME = /^[A-Za-z_][A-Za-z0-9_-]*$/;

/**
 * Cluster names are interpolated into DDL (quoted as an identifier and as a
 * string), so only letters, digits, _ and - pass (remote_servers element names).
 */
export function assertClusterName(cluster: string): string {
  if (!CLUSTER_NAME.test(cluster)) {
    throw new PipelineError(
      'ConfigInvalid',
      `CLICKHOUSE_CLUSTER: expected letters, digits, _ and - (not starting with a digit or -), got "${cluster}"`,
    );
  }
  return cluster;
}

export const LOCAL_SUFFIX = '_local';
/** The per-node table under a sharded table's Distributed table. */
export const localName: LocalName = (table) => `${table}${LOCAL_SUFFIX}`;

/** Where a table of the single-node schema lives on a cluster. */
export type Placement =
  { readonly kind: 'sharded'; readonly shardingKey: string } | { readonly kind: 'everywhere' };

const BY_PATIENT: Placement = { kind: 'sharded', shardingKey: 'cityHash64(patient_id)' };

/** Every table of the schema (views are not tables); a table missing here is a programming error. */
export const PLACEMENT: Readonly<Record<string, Placement>> = {
  observations: BY_PATIENT,
  observation_components: BY_PATIENT,
  samples: BY_PATIENT,
  rollup_touch: BY_PATIENT,
  vitals_1m_state: BY_PATIENT,
  vitals_1h_state: BY_PATIENT,
  device_messages: { kind: 'sharded', shardingKey: 'cityHash64(device_id)' },
  reference_ranges: { kind: 'everywhere' },
  device_units: { kind: 'everywhere' },
  device_associations: { kind: 'everywhere' },
  schema_migrations: { kind: 'everywhere' },
};

function placementOf(table: string): Placement {
  const p = PLACEMENT[table];
  if (p === undefined) throw new Error(`schema-cluster: no placement for table ${table}`);
  return p;
}

/** The table names that hold rows on each node: `<name>_local` for a sharded table. */
export function nodeTableName(table: string): string {
  return placementOf(table).kind === 'sharded' ? localName(table) : table;
}

function quoteString(value: string): string {
  return `'${value.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;
}

/** ` ON CLUSTER \`c\``, for the head of a DDL statement. */
function onClusterClause(layout: ClusterLayout): string {
  return ` ON CLUSTER \`${assertClusterName(layout.cluster)}\``;
}

const DDL_HEAD =
  /^(CREATE (?:TABLE|VIEW|MATERIALIZED VIEW|DATABASE) IF NOT EXISTS \S+|ALTER TABLE \S+|TRUNCATE TABLE IF EXISTS \S+)/;

/** The statement with ON CLUSTER after the name of the object it creates or changes. */
export function onCluster(statement: string, layout: ClusterLayout): string {
  if (!DDL_HEAD.test(statement))
    throw new Error(`schema-cluster: not a DDL statement we lay out: ${statement.slice(0, 60)}`);
  return statement.replace(DDL_HEAD, (head) => `${head}${onClusterClause(layout)}`);
}

const CREATE_HEAD = /^CREATE TABLE IF NOT EXISTS (\S+)\.(\w+) \(/;
const ENGINE_LINE = /\nENGINE = (\w+)(?:\(([^)\n]*)\))?(?=\n|$)/;

/**
 * One single-node CREATE TABLE (the shape the builders write: a head line, the
 * columns, `ENGINE = X(args)` on a line of its own) as the cluster's statements.
 */
export function clusterTable(statement: string, layout: ClusterLayout): string[] {
  const head = CREATE_HEAD.exec(statement);
  const engine = ENGINE_LINE.exec(statement);
  if (!head || !engine)
    throw new Error(`schema-cluster: not a CREATE TABLE we lay out: ${statement.slice(0, 60)}`);
  const [, db, table] = head as unknown as [string, string, string];
  const [, engineName, engineArgs] = engine as unknown as [string, string, string | undefined];
  const placement = placementOf(table);
  const sharded = placement.kind === 'sharded';
  const name = sharded ? localName(table) : table;
  const local = statement
    .replace(CREATE_HEAD, `CREATE TABLE IF NOT EXISTS ${db}.${name}${onClusterClause(layout)} (`)
    .replace(ENGINE_LINE, () => `\nENGINE = ${replicated(engineName, engineArgs, name, layout)}`);
  if (!sharded) return [local];
  return [
    local,
    `CREATE TABLE IF NOT EXISTS ${db}.${table}${onClusterClause(layout)} AS ${db}.${name}
ENGINE = Distributed(${[layout.cluster, layout.database, name].map(quoteString).join(', ')}, ${placement.shardingKey})`,
  ];
}

/**
 * The replicated form of a MergeTree engine, its own arguments kept after the
 * ZooKeeper path and replica name. A sharded table has one path per shard; a
 * table on every node one path, its replicas named by shard and replica so the
 * names stay unique whether {replica} is unique in the cluster or only per shard.
 * An engine without storage (Null) stays as it is.
 */
function replicated(
  engine: string,
  args: string | undefined,
  table: string,
  layout: ClusterLayout,
): string {
  if (engine === 'Null') return engine;
  if (!engine.endsWith('MergeTree'))
    throw new Error(`schema-cluster: no replicated form of ${engine}`);
  const everywhere = placementOf(table.replace(/_local$/, '')).kind === 'everywhere';
  const path = everywhere
    ? `/clickhouse/tables/all/${layout.database}/${table}`
    : `/clickhouse/tables/{shard}/${layout.database}/${table}`;
  const replica = everywhere ? '{shard}-{replica}' : '{replica}';
  const all = [quoteString(path), quoteString(replica), ...(args ? [args] : [])];
  return `Replicated${engine}(${all.join(', ')})`;
}

const ALTER_HEAD = /^ALTER TABLE (\S+)\.(\w+) /;

/**
 * One single-node ALTER TABLE on the cluster: on the node tables, and for a
 * sharded table's column changes on its Distributed table too (an index lives
 * only where the rows are).
 */
export function clusterAlter(statement: string, layout: ClusterLayout): string[] {
  const head = ALTER_HEAD.exec(statement);
  if (!head) throw new Error(`schema-cluster: not an ALTER TABLE: ${statement.slice(0, 60)}`);
  const [, db, table] = head as unknown as [string, string, string];
  const rest = statement.slice(head[0].length);
  const local = `ALTER TABLE ${db}.${nodeTableName(table)}${onClusterClause(layout)} ${rest}`;
  const columnsOnly =
    !/^\s*(?:ADD|DROP|MATERIALIZE|CLEAR) INDEX\b|^\s*(?:MODIFY|REMOVE) TTL\b/.test(rest);
  return placementOf(table).kind === 'sharded' && columnsOnly
    ? [local, `ALTER TABLE ${db}.${table}${onClusterClause(layout)} ${rest}`]
    : [local];
}
