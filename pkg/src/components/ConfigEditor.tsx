import React from 'react';
import { css } from '@emotion/css';
import { DataSourcePluginOptionsEditorProps, GrafanaTheme2 } from '@grafana/data';
import { Alert, Field, Input, RadioButtonGroup, SecretInput, Stack, Switch, Text, useStyles2 } from '@grafana/ui';

import { Granularity, GRANULARITIES, MPOptions, MPSecureJsonData } from '../types';

export type ConfigEditorProps = DataSourcePluginOptionsEditorProps<MPOptions, MPSecureJsonData>;

const DEFAULTS = { database: 'analytics', connectTimeoutSeconds: 5, queryTimeoutSeconds: 10 };
const GRANULARITY_OPTIONS = GRANULARITIES.map((g) => ({ label: g === 'auto' ? 'Auto' : g, value: g }));
const BAD_DB_CHARS = /[/\\. "$]/;

/**
 * The data source's settings page. Writes exactly these keys:
 * jsonData: database, connectTimeoutSeconds, queryTimeoutSeconds,
 *   defaultGranularity, tls, tlsCAFile, tlsCertificateKeyFile,
 *   tlsAllowInvalidCertificates;
 * secureJsonData: uri, tlsCertificateKeyFilePassword.
 * A cleared field removes its key, so the backend's default applies.
 */
export function ConfigEditor({ options, onOptionsChange }: ConfigEditorProps) {
  const styles = useStyles2(getStyles);
  const jsonData = options.jsonData ?? {};
  const secureJsonData = (options.secureJsonData ?? {}) as MPSecureJsonData;
  const secureJsonFields = options.secureJsonFields ?? {};

  const setJson = <K extends keyof MPOptions>(key: K, value: MPOptions[K] | undefined) => {
    const next = { ...jsonData };
    if (value === undefined || value === '') {
      delete next[key];
    } else {
      next[key] = value;
    }
    onOptionsChange({ ...options, jsonData: next });
  };
  const setSecure = (key: keyof MPSecureJsonData, value: string) => {
    onOptionsChange({ ...options, secureJsonData: { ...secureJsonData, [key]: value } });
  };
  const resetSecure = (key: keyof MPSecureJsonData) => {
    onOptionsChange({
      ...options,
      secureJsonFields: { ...secureJsonFields, [key]: false },
      secureJsonData: { ...secureJsonData, [key]: '' },
    });
  };
  const seconds = (key: 'connectTimeoutSeconds' | 'queryTimeoutSeconds') => (e: React.FormEvent<HTMLInputElement>) => {
    const raw = e.currentTarget.value.trim();
    setJson(key, raw === '' ? undefined : Number(raw));
  };

  const uriConfigured = !!secureJsonFields.uri;
  const uri = secureJsonData.uri ?? '';
  const uriProblem =
    uri && !/^mongodb(\+srv)?:\/\//.test(uri.trim())
      ? 'A connection URI starts with mongodb:// or mongodb+srv://'
      : undefined;
  const database = jsonData.database ?? '';
  const dbProblem = BAD_DB_CHARS.test(database) ? 'A database name has no / \\ . space " or $' : undefined;
  const timeoutProblem = (v: number | undefined) =>
    v !== undefined && !(Number.isFinite(v) && v > 0 && v <= 3600) ? 'Between 0 and 3600 seconds' : undefined;
  const connectProblem = timeoutProblem(jsonData.connectTimeoutSeconds);
  const queryProblem = timeoutProblem(jsonData.queryTimeoutSeconds);

  return (
    <div className={styles.root} data-testid="mongopulse-config-editor">
      <section className={styles.section}>
        <Text element="h3">Connection</Text>
        <Field
          label="Connection URI"
          description="Stored encrypted by Grafana and never sent back to the browser. Credentials, replica set and options go in the URI."
          required
          invalid={!!uriProblem}
          error={uriProblem}
        >
          <SecretInput
            id="config-uri"
            width={60}
            isConfigured={uriConfigured}
            value={uri}
            placeholder="mongodb://user:password@host:27017/?replicaSet=rs0"
            onChange={(e) => setSecure('uri', e.currentTarget.value)}
            onReset={() => resetSecure('uri')}
          />
        </Field>
        {!uriConfigured && !uri && (
          <Alert severity="info" title="Enter the connection URI" className={styles.hint}>
            Then press <b>Save &amp; test</b>: it connects, reports the MongoDB version, whether it is a replica set (live
            panels need one) and which rollup collections exist.
          </Alert>
        )}
        <Field
          label="Database"
          description="Database holding the rollups: the daemon's mongodb.database."
          invalid={!!dbProblem}
          error={dbProblem}
        >
          <Input
            id="config-database"
            width={30}
            value={database}
            placeholder={DEFAULTS.database}
            onChange={(e) => setJson('database', e.currentTarget.value)}
          />
        </Field>
      </section>

      <section className={styles.section}>
        <Text element="h3">Timeouts</Text>
        <Stack direction="row" gap={2}>
          <Field
            label="Connect timeout (s)"
            description="Connecting and Save & test."
            invalid={!!connectProblem}
            error={connectProblem}
          >
            <Input
              id="config-connect-timeout"
              type="number"
              width={16}
              min={1}
              max={3600}
              value={jsonData.connectTimeoutSeconds ?? ''}
              placeholder={String(DEFAULTS.connectTimeoutSeconds)}
              onChange={seconds('connectTimeoutSeconds')}
            />
          </Field>
          <Field
            label="Query timeout (s)"
            description="Each query (maxTimeMS)."
            invalid={!!queryProblem}
            error={queryProblem}
          >
            <Input
              id="config-query-timeout"
              type="number"
              width={16}
              min={1}
              max={3600}
              value={jsonData.queryTimeoutSeconds ?? ''}
              placeholder={String(DEFAULTS.queryTimeoutSeconds)}
              onChange={seconds('queryTimeoutSeconds')}
            />
          </Field>
        </Stack>
      </section>

      <section className={styles.section}>
        <Text element="h3">Queries</Text>
        <Field
          label="Default granularity"
          description="Rollup level of new queries. Auto picks the coarsest level that fits the panel's interval and range."
        >
          <RadioButtonGroup<Granularity>
            options={GRANULARITY_OPTIONS}
            value={jsonData.defaultGranularity ?? 'auto'}
            onChange={(v) => setJson('defaultGranularity', v)}
          />
        </Field>
      </section>

      <section className={styles.section}>
        <Text element="h3">TLS</Text>
        <Field
          label="Use TLS"
          description="Also on when the URI says tls=true or uses mongodb+srv://."
        >
          <Switch
            id="config-tls"
            value={!!jsonData.tls}
            onChange={(e) => setJson('tls', e.currentTarget.checked ? true : undefined)}
          />
        </Field>
        {(jsonData.tls || jsonData.tlsCAFile || jsonData.tlsCertificateKeyFile || jsonData.tlsAllowInvalidCertificates) && (
          <>
            <Field label="CA file" description="PEM file of the certificate authorities, a path on the Grafana server.">
              <Input
                id="config-tls-ca-file"
                width={60}
                value={jsonData.tlsCAFile ?? ''}
                placeholder="/etc/ssl/mongodb/ca.pem"
                onChange={(e) => setJson('tlsCAFile', e.currentTarget.value)}
              />
            </Field>
            <Field
              label="Client certificate and key file"
              description="PEM file with the client certificate and its private key (x.509 authentication), a path on the Grafana server."
            >
              <Input
                id="config-tls-cert-key-file"
                width={60}
                value={jsonData.tlsCertificateKeyFile ?? ''}
                placeholder="/etc/ssl/mongodb/client.pem"
                onChange={(e) => setJson('tlsCertificateKeyFile', e.currentTarget.value)}
              />
            </Field>
            <Field label="Key file password" description="Only if the private key is encrypted.">
              <SecretInput
                id="config-tls-key-password"
                width={40}
                isConfigured={!!secureJsonFields.tlsCertificateKeyFilePassword}
                value={secureJsonData.tlsCertificateKeyFilePassword ?? ''}
                onChange={(e) => setSecure('tlsCertificateKeyFilePassword', e.currentTarget.value)}
                onReset={() => resetSecure('tlsCertificateKeyFilePassword')}
              />
            </Field>
            <Field
              label="Allow invalid certificates"
              description="Skips certificate validation. For testing only: anyone on the network path can impersonate the server."
            >
              <Switch
                id="config-tls-allow-invalid"
                value={!!jsonData.tlsAllowInvalidCertificates}
                onChange={(e) => setJson('tlsAllowInvalidCertificates', e.currentTarget.checked ? true : undefined)}
              />
            </Field>
          </>
        )}
      </section>
    </div>
  );
}

const getStyles = (theme: GrafanaTheme2) => ({
  root: css({ maxWidth: 760 }),
  section: css({
    marginBottom: theme.spacing(4),
    '& > h3': { marginBottom: theme.spacing(2) },
  }),
  hint: css({ marginTop: theme.spacing(-1), marginBottom: theme.spacing(2) }),
});
