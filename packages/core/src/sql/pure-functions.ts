/**
 * Built-in functions that neither change session state nor run SQL text: a statement calling only
 * these (and no user function) is "plain" and pays nothing extra. Every other name is "opaque" (fail
 * safe): a user function, a procedure, or a builtin that executes SQL it is given (query_to_xml,
 * ts_stat, ...) may do anything a DO block can. Matched on the unqualified name, or pg_catalog.name.
 */
// biome-ignore format: a table of names reads better packed
export const PURE_FUNCTIONS: ReadonlySet<string> = new Set([
  // aggregates and window functions
  'count', 'sum', 'avg', 'min', 'max', 'array_agg', 'string_agg', 'json_agg', 'jsonb_agg',
  'json_object_agg', 'jsonb_object_agg', 'bool_and', 'bool_or', 'every', 'bit_and', 'bit_or', 'bit_xor',
  'stddev', 'stddev_pop', 'stddev_samp', 'variance', 'var_pop', 'var_samp', 'corr', 'covar_pop',
  'covar_samp', 'regr_avgx', 'regr_avgy', 'regr_count', 'regr_intercept', 'regr_r2', 'regr_slope',
  'regr_sxx', 'regr_sxy', 'regr_syy', 'percentile_cont', 'percentile_disc', 'mode', 'rank',
  'dense_rank', 'percent_rank', 'cume_dist', 'row_number', 'ntile', 'lag', 'lead', 'first_value',
  'last_value', 'nth_value', 'range_agg', 'range_intersect_agg', 'xmlagg', 'any_value',
  // strings
  'lower', 'upper', 'initcap', 'length', 'char_length', 'character_length', 'octet_length',
  'bit_length', 'substr', 'substring', 'position', 'strpos', 'replace', 'translate', 'btrim', 'ltrim',
  'rtrim', 'lpad', 'rpad', 'left', 'right', 'repeat', 'reverse', 'split_part', 'concat', 'concat_ws',
  'format', 'md5', 'sha224', 'sha256', 'sha384', 'sha512', 'encode', 'decode', 'to_hex', 'ascii',
  'chr', 'quote_ident', 'quote_literal', 'quote_nullable', 'regexp_match', 'regexp_matches',
  'regexp_replace', 'regexp_split_to_array', 'regexp_split_to_table', 'regexp_count', 'regexp_instr',
  'regexp_like', 'regexp_substr', 'starts_with', 'string_to_array', 'string_to_table',
  'array_to_string', 'overlay', 'normalize', 'is_normalized', 'unistr', 'convert_from', 'convert_to',
  'to_char', 'to_number', 'to_date', 'to_timestamp', 'like_escape', 'similar_to_escape',
  // numbers
  'abs', 'ceil', 'ceiling', 'floor', 'round', 'trunc', 'sign', 'sqrt', 'cbrt', 'power', 'pow', 'exp',
  'ln', 'log', 'log10', 'mod', 'div', 'width_bucket', 'pi', 'degrees', 'radians', 'sin', 'cos', 'tan',
  'asin', 'acos', 'atan', 'atan2', 'sinh', 'cosh', 'tanh', 'factorial', 'gcd', 'lcm', 'scale',
  'min_scale', 'trim_scale', 'random', 'gen_random_uuid',
  // dates and times
  'now', 'clock_timestamp', 'statement_timestamp', 'transaction_timestamp', 'timeofday', 'date_trunc',
  'date_part', 'extract', 'age', 'make_date', 'make_time', 'make_timestamp', 'make_timestamptz',
  'make_interval', 'justify_days', 'justify_hours', 'justify_interval', 'isfinite', 'date_bin',
  'timezone', 'overlaps', 'date_add', 'date_subtract',
  // json
  'to_json', 'to_jsonb', 'row_to_json', 'array_to_json', 'json_build_object', 'jsonb_build_object',
  'json_build_array', 'jsonb_build_array', 'json_object', 'jsonb_object', 'json_array_length',
  'jsonb_array_length', 'json_each', 'jsonb_each', 'json_each_text', 'jsonb_each_text',
  'json_extract_path', 'jsonb_extract_path', 'json_extract_path_text', 'jsonb_extract_path_text',
  'json_object_keys', 'jsonb_object_keys', 'json_populate_record', 'jsonb_populate_record',
  'json_populate_recordset', 'jsonb_populate_recordset', 'json_to_record', 'jsonb_to_record',
  'json_to_recordset', 'jsonb_to_recordset', 'json_array_elements', 'jsonb_array_elements',
  'json_array_elements_text', 'jsonb_array_elements_text', 'json_typeof', 'jsonb_typeof',
  'json_strip_nulls', 'jsonb_strip_nulls', 'jsonb_set', 'jsonb_set_lax', 'jsonb_insert',
  'jsonb_pretty', 'jsonb_path_exists', 'jsonb_path_match', 'jsonb_path_query',
  'jsonb_path_query_array', 'jsonb_path_query_first', 'jsonb_path_exists_tz', 'jsonb_path_match_tz',
  'jsonb_path_query_tz', 'jsonb_path_query_array_tz', 'jsonb_path_query_first_tz',
  // full text search (not ts_stat, which runs a query given as text)
  'to_tsvector', 'to_tsquery', 'plainto_tsquery', 'phraseto_tsquery', 'websearch_to_tsquery',
  'ts_rank', 'ts_rank_cd', 'ts_headline', 'setweight', 'strip', 'numnode', 'querytree',
  'array_to_tsvector', 'tsvector_to_array', 'ts_delete', 'ts_filter',
  // arrays, ranges, set-returning helpers
  'array_length', 'array_lower', 'array_upper', 'array_dims', 'array_ndims', 'cardinality',
  'array_append', 'array_prepend', 'array_cat', 'array_remove', 'array_replace', 'array_position',
  'array_positions', 'unnest', 'array_fill', 'trim_array', 'generate_series', 'generate_subscripts',
  'lower_inc', 'upper_inc', 'lower_inf', 'upper_inf', 'isempty', 'range_merge', 'int4range',
  'int8range', 'numrange', 'tsrange', 'tstzrange', 'daterange', 'multirange',
  // casts written as calls
  'bool', 'int2', 'int4', 'int8', 'float4', 'float8', 'numeric', 'text', 'varchar', 'date', 'time',
  'timestamp', 'timestamptz', 'interval', 'uuid', 'json', 'jsonb', 'inet', 'cidr', 'bytea',
  // reading state, and state that ends with the transaction
  'current_setting', 'pg_typeof', 'num_nulls', 'num_nonnulls', 'format_type', 'current_database',
  'current_schema', 'current_schemas', 'version', 'pg_backend_pid', 'pg_sleep', 'pg_notify',
  'nextval', 'setval', 'pg_advisory_xact_lock', 'pg_advisory_xact_lock_shared',
  'pg_try_advisory_xact_lock', 'pg_try_advisory_xact_lock_shared', 'pg_advisory_unlock',
  'pg_advisory_unlock_shared', 'pg_advisory_unlock_all', 'pg_current_wal_insert_lsn',
  'pg_current_wal_lsn', 'pg_last_wal_replay_lsn', 'pg_collation_for', 'coalesce', 'nullif',
  'greatest', 'least', 'inet_server_port', 'inet_server_addr', 'inet_client_port', 'inet_client_addr',
  'pg_is_in_recovery', 'pg_postmaster_start_time', 'pg_last_xact_replay_timestamp',
])

/**
 * Builtins that change session state or run SQL text: never accepted in `postgres.safeFunctions`, where
 * they would take a statement that calls them off the guarded path.
 */
// biome-ignore format: a table of names reads better packed
export const SESSION_FUNCTIONS: ReadonlySet<string> = new Set([
  'set_config', 'pg_advisory_lock', 'pg_advisory_lock_shared', 'pg_try_advisory_lock',
  'pg_try_advisory_lock_shared', 'query_to_xml', 'query_to_xmlschema', 'query_to_xml_and_xmlschema',
  'cursor_to_xml', 'cursor_to_xmlschema', 'ts_stat', 'dblink', 'dblink_exec', 'dblink_connect',
  'dblink_connect_u', 'dblink_open', 'lo_open', 'lo_import', 'lo_export',
])
