import sqlalchemy as sa

from conveyor import Migration


class CreateUsersTable(Migration):
    def up(self) -> None:
        self.schema.create_table(
            "users",
            sa.Column("id", sa.Integer, primary_key=True),
            sa.Column("email", sa.String(255), nullable=False),
            sa.Column("welcomed_at", sa.DateTime, nullable=True),
        )

    def down(self) -> None:
        self.schema.drop_table("users")
