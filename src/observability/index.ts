/** Metrics, health and readiness endpoints shared by every role. */
export { bearerMatches, PUBLIC_PATHS, requireAdminToken } from './bearer.js';
export {
  checkReadiness,
  readinessProbes,
  type Readiness,
  type ReadinessDeps,
  type ReadinessProbes,
} from './readiness.js';
export {
  buildRoleServer,
  startRoleServer,
  type RoleServerOptions,
  type RunningRoleServer,
} from './role-server.js';
export {
  createTracing,
  serviceName,
  TRACING_OFF,
  type SpanAttributes,
  type SpanOptions,
  type TraceSpan,
  type Tracing,
} from './tracing.js';
