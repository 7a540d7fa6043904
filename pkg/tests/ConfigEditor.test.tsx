import React, { useState } from 'react';
import { DataSourceSettings } from '@grafana/data';
import { render, screen } from '@testing-library/react';
import userEvent from '@testing-library/user-event';

import { ConfigEditor } from '../src/components/ConfigEditor';
import { MPOptions, MPSecureJsonData } from '../src/types';

type Settings = DataSourceSettings<MPOptions, MPSecureJsonData>;

function settings(patch: Partial<Settings> = {}): Settings {
  return {
    id: 1,
    uid: 'mongopulse',
    orgId: 1,
    name: 'Mongo Pulse',
    type: 'mongopulse-analytics-datasource',
    typeName: 'Mongo Pulse',
    typeLogoUrl: '',
    access: 'proxy',
    url: '',
    user: '',
    database: '',
    basicAuth: false,
    basicAuthUser: '',
    isDefault: false,
    withCredentials: false,
    readOnly: false,
    jsonData: {},
    secureJsonFields: {},
    ...patch,
  };
}

function renderConfig(initial: Settings) {
  const state = { last: initial };
  function Host() {
    const [options, setOptions] = useState(initial);
    return (
      <ConfigEditor
        options={options}
        onOptionsChange={(o) => {
          state.last = o;
          setOptions(o);
        }}
      />
    );
  }
  const user = userEvent.setup();
  render(<Host />);
  return { user, state };
}

/** Every key the editor may write, so the backend can accept exactly these. */
const JSON_KEYS = [
  'database',
  'connectTimeoutSeconds',
  'queryTimeoutSeconds',
  'defaultGranularity',
  'tls',
  'tlsCAFile',
  'tlsCertificateKeyFile',
  'tlsAllowInvalidCertificates',
];
const SECURE_KEYS = ['uri', 'tlsCertificateKeyFilePassword'];

describe('ConfigEditor', () => {
  it('writes the settings the backend reads', async () => {
    const { user, state } = renderConfig(settings());
    await user.type(screen.getByLabelText(/Connection URI/), 'mongodb://db:27017/?replicaSet=rs0');
    await user.type(screen.getByLabelText(/^Database/), 'pulse');
    await user.type(screen.getByLabelText(/Connect timeout/), '3');
    await user.type(screen.getByLabelText(/Query timeout/), '20');
    await user.click(screen.getByRole('radio', { name: 'hour' }));
    await user.click(screen.getByLabelText(/^Use TLS/));
    await user.type(screen.getByLabelText(/^CA file/), '/etc/ssl/ca.pem');
    await user.type(screen.getByLabelText(/^Client certificate and key file/), '/etc/ssl/client.pem');
    await user.type(screen.getByLabelText(/^Key file password/), 'k3y');
    await user.click(screen.getByLabelText(/^Allow invalid certificates/));

    expect(state.last.jsonData).toEqual({
      database: 'pulse',
      connectTimeoutSeconds: 3,
      queryTimeoutSeconds: 20,
      defaultGranularity: 'hour',
      tls: true,
      tlsCAFile: '/etc/ssl/ca.pem',
      tlsCertificateKeyFile: '/etc/ssl/client.pem',
      tlsAllowInvalidCertificates: true,
    });
    expect(state.last.secureJsonData).toEqual({
      uri: 'mongodb://db:27017/?replicaSet=rs0',
      tlsCertificateKeyFilePassword: 'k3y',
    });
    expect(Object.keys(state.last.jsonData).sort()).toEqual([...JSON_KEYS].sort());
    expect(Object.keys(state.last.secureJsonData!).sort()).toEqual([...SECURE_KEYS].sort());
  });

  it('removes a cleared key so the backend default applies', async () => {
    const { user, state } = renderConfig(settings({ jsonData: { database: 'pulse', queryTimeoutSeconds: 20 } }));
    await user.clear(screen.getByLabelText(/^Database/));
    await user.clear(screen.getByLabelText(/Query timeout/));
    expect(state.last.jsonData).toEqual({});
  });

  it('shows a stored URI as configured, never its value, and can reset it', async () => {
    const { user, state } = renderConfig(settings({ secureJsonFields: { uri: true } }));
    const input = screen.getByLabelText(/Connection URI/) as HTMLInputElement;
    expect(input.value).toBe('configured');
    expect(input).toBeDisabled();
    await user.click(screen.getByRole('button', { name: 'Reset' }));
    expect(state.last.secureJsonFields.uri).toBe(false);
    expect(state.last.secureJsonData?.uri).toBe('');
    expect(screen.getByLabelText(/Connection URI/)).toBeEnabled();
  });

  it('says what is wrong before saving', async () => {
    const { user } = renderConfig(settings());
    await user.type(screen.getByLabelText(/Connection URI/), 'localhost:27017');
    await user.type(screen.getByLabelText(/^Database/), 'my.db');
    await user.type(screen.getByLabelText(/Query timeout/), '0');
    expect(screen.getByText('A connection URI starts with mongodb:// or mongodb+srv://')).toBeInTheDocument();
    expect(screen.getByText(/A database name has no/)).toBeInTheDocument();
    expect(screen.getByText('Between 0 and 3600 seconds')).toBeInTheDocument();
  });

  it('hides the TLS files until TLS is on', async () => {
    const { user } = renderConfig(settings());
    expect(screen.queryByLabelText(/^CA file/)).not.toBeInTheDocument();
    await user.click(screen.getByLabelText(/^Use TLS/));
    expect(screen.getByLabelText(/^CA file/)).toBeInTheDocument();
  });
});
